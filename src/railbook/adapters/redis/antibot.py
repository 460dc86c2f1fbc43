"""Anti-bot state in Redis (distributed mode): captcha answers and failed-login counts, shared by
every API process. Keys carry the ``ab:`` prefix; each one expires by itself."""

from __future__ import annotations

from typing import Any

from railbook.adapters.redis.autopipe import AutoPipeline, raise_errors


def captcha_key(captcha_id: str) -> str:
    return f"ab:captcha:{captcha_id}"


def mobile_failures_key(mobile: str) -> str:
    return f"ab:login:m:{mobile}"


def address_failures_key(address: str) -> str:
    return f"ab:login:ip:{address}"


def _text(value: Any) -> str | None:
    return value.decode() if isinstance(value, bytes) else None if value is None else str(value)


class RedisCaptchaStore:
    """The CaptchaStore of the distributed mode: one key per challenge, taken with GETDEL, so of two
    checks of one answer racing on different processes only one finds it."""

    def __init__(self, redis: Any, autopipe: AutoPipeline) -> None:
        self.redis = redis
        self.batch = autopipe

    async def keep(self, captcha_id: str, answer: str, ttl_seconds: int) -> None:
        raise_errors(await self.batch.execute([("SET", captcha_key(captcha_id), answer, "EX", ttl_seconds)]))

    async def take(self, captcha_id: str) -> str | None:
        (answer,) = raise_errors(await self.batch.execute([("GETDEL", captcha_key(captcha_id))]))
        return _text(answer)

    async def peek(self, captcha_id: str) -> str | None:
        return _text(await self.redis.get(captcha_key(captcha_id)))


class RedisLoginThrottle:
    """The LoginThrottle of the distributed mode: a counter per mobile and per address, whose expiry
    is set by the first failure of its window (``EXPIRE … NX``) and never pushed back by later ones."""

    def __init__(self, autopipe: AutoPipeline) -> None:
        self.batch = autopipe

    async def failures(self, mobile: str, address: str) -> tuple[int, int]:
        by_mobile, by_address = raise_errors(
            await self.batch.execute(
                [("GET", mobile_failures_key(mobile)), ("GET", address_failures_key(address))]
            )
        )
        return int(by_mobile or 0), int(by_address or 0)

    async def record_failure(self, mobile: str, address: str, window_seconds: int) -> None:
        m, a = mobile_failures_key(mobile), address_failures_key(address)
        raise_errors(
            await self.batch.execute(
                [
                    ("INCR", m),
                    ("EXPIRE", m, window_seconds, "NX"),
                    ("INCR", a),
                    ("EXPIRE", a, window_seconds, "NX"),
                ]
            )
        )

    async def clear(self, mobile: str) -> None:
        raise_errors(await self.batch.execute([("DEL", mobile_failures_key(mobile))]))
