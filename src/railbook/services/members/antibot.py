"""Anti-bot challenges (API.md "Anti-bot"): captchas, the login throttle and the order-side challenge.

A captcha is a short text drawn in a distorted PNG; its answer is kept (Redis or memory, by the
``CaptchaStore``) for ``captcha_ttl_seconds`` and is good for one check, right or wrong: the check
takes it out of the store before comparing, so an answer can never be tried twice. Login asks for
one once a mobile (or a client address) has failed too often in the window; an order asks for one
once its member has placed more orders this minute than a person does. ``RATE_LIMITS=off`` turns
both challenges off (the blocklist stays on, see ``blocklist``).
"""

from __future__ import annotations

import asyncio
import base64
import io
import secrets
from dataclasses import dataclass
from typing import Protocol

from captcha.image import ImageCaptcha

from railbook.config import Settings
from railbook.domain.antibot import answer_matches, captcha_text
from railbook.domain.errors import CaptchaRequired, LoginBusy
from railbook.services.members.ports import CaptchaStore, LoginThrottle

CAPTCHA_PATH = "/api/v1/captcha"


class AntiBotContext(Protocol):
    """What these use cases need from the composition root (``bootstrap.Container``)."""

    settings: Settings
    captcha_images: CaptchaImages

    @property
    def captchas(self) -> CaptchaStore: ...

    @property
    def login_throttle(self) -> LoginThrottle: ...


@dataclass(frozen=True, slots=True)
class Challenge:
    """A new captcha: its id and its image as a ``data:image/png;base64,…`` URL."""

    captcha_id: str
    image: str


@dataclass(frozen=True, slots=True)
class CaptchaAnswer:
    """What a client typed for a captcha."""

    captcha_id: str
    answer: str


class CaptchaImages:
    """Captcha PNGs drawn off the event loop (about 10 ms of CPU each), a bounded number at a time.

    Invariant: at most ``concurrency`` images are drawn at once (each in a worker thread) and at most
    ``queue_limit`` more wait; beyond that a request is refused with 503 at once, so a flood of
    captcha requests costs a fixed share of the CPU and never holds the event loop.
    """

    def __init__(self, *, width: int = 160, height: int = 60, concurrency: int = 1, queue_limit: int = 32):
        self._painter = ImageCaptcha(width=width, height=height)
        self._slots = asyncio.Semaphore(concurrency)
        self._limit = concurrency + queue_limit
        self._waiting = 0

    def _draw(self, text: str) -> bytes:
        buffer: io.BytesIO = self._painter.generate(text, format="png")
        return buffer.getvalue()

    async def png(self, text: str) -> bytes:
        """The PNG bytes of an image showing ``text``."""
        if self._waiting >= self._limit:
            raise LoginBusy("Too many captcha requests at once; retry shortly.", retry_after=1)
        self._waiting += 1
        try:
            async with self._slots:
                return await asyncio.to_thread(self._draw, text)
        finally:
            self._waiting -= 1


async def new_challenge(container: AntiBotContext) -> Challenge:
    """A new captcha: its answer kept for ``captcha_ttl_seconds``, its image as a data URL."""
    text = captcha_text()
    png = await container.captcha_images.png(text)
    captcha_id = secrets.token_urlsafe(18)
    await container.captchas.keep(captcha_id, text, container.settings.captcha_ttl_seconds)
    return Challenge(captcha_id, "data:image/png;base64," + base64.b64encode(png).decode("ascii"))


async def solved(container: AntiBotContext, given: CaptchaAnswer) -> bool:
    """Whether ``given`` answers its captcha. The answer is used up whatever the outcome."""
    expected = await container.captchas.take(given.captcha_id)
    return expected is not None and answer_matches(expected, given.answer)


def captcha_required(reason: str, message: str) -> CaptchaRequired:
    """The 403 refusal: ``details`` say a captcha is needed, where to get one and why."""
    return CaptchaRequired(
        message,
        details={
            "captcha_required": True,
            "captcha_url": CAPTCHA_PATH,
            "fields": ["captcha_id", "captcha_answer"],
            "reason": reason,
        },
    )


async def _demand(container: AntiBotContext, given: CaptchaAnswer | None, reason: str, message: str) -> None:
    """Let the request through only with a right answer to a captcha not used before."""
    if given is None:
        raise captcha_required(reason, message)
    if not await solved(container, given):
        raise captcha_required(
            "wrong_answer", "The captcha answer is wrong, expired or already used; answer a new one."
        )


async def guard_login(
    container: AntiBotContext, *, mobile: str, address: str, captcha: CaptchaAnswer | None
) -> None:
    """Before the password is checked: after too many failed logins of this mobile (or from this
    address) in the window, a login needs a solved captcha (403 CAPTCHA_REQUIRED otherwise)."""
    settings = container.settings
    if not settings.rate_limits_on:
        return
    by_mobile, by_address = await container.login_throttle.failures(mobile, address)
    if by_mobile < settings.login_failures_per_mobile and (
        not address or by_address < settings.login_failures_per_address
    ):
        return
    await _demand(
        container, captcha, "failed_logins", "Too many failed logins: answer the captcha to log in."
    )


async def login_failed(container: AntiBotContext, *, mobile: str, address: str) -> None:
    """Count a wrong password (or an unknown mobile) against the mobile and the address."""
    settings = container.settings
    if settings.rate_limits_on:
        await container.login_throttle.record_failure(mobile, address, settings.login_failure_window_seconds)


async def login_succeeded(container: AntiBotContext, *, mobile: str) -> None:
    """The right password: the mobile's failures are forgotten."""
    if container.settings.rate_limits_on:
        await container.login_throttle.clear(mobile)


async def challenge_order(
    container: AntiBotContext, orders_this_minute: int, captcha: CaptchaAnswer | None
) -> None:
    """Past ``captcha_orders_per_minute`` orders of one member in a minute (a pace no person keeps
    up), each further order that minute needs a solved captcha. Costs nothing below the threshold:
    the count comes from the order path's rate limit, in the round trip it makes anyway."""
    if orders_this_minute <= container.settings.captcha_orders_per_minute:
        return
    await _demand(container, captcha, "orders_too_fast", "Orders are coming too fast: answer the captcha.")
