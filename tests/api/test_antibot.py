"""Anti-bot over HTTP (API.md "Anti-bot", the captcha and blocklist rows), on both store configurations.

The session's apps run with ``RATE_LIMITS=off`` (as load tests do): there the challenges are off and
the blocklist is on. The challenges are tested on apps of this module's own with rate limits on,
each test speaking from a client address of its own (so one test's failed logins never count
against another's). The right answer of a captcha is read from its store through the port, as an
operator's tool would, not from the picture."""

from __future__ import annotations

import base64
import datetime as dt
import itertools
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from starlette.types import ASGIApp

from railbook.adapters.db.migrate import upgrade
from railbook.api.app import create_app
from railbook.bootstrap import Container
from railbook.domain.antibot import CAPTCHA_ALPHABET
from tests.support import (
    add_passenger,
    admin,
    app_settings,
    make_train_day,
    order_body,
    register,
    unique,
    wait_until,
)

ORDERS_BEFORE_CAPTCHA = 2
_hosts = itertools.count(random.randrange(1, 2**32))


def address() -> str:
    """A client address (IPv6 documentation range) no other test of this run speaks from."""
    n = next(_hosts)
    return f"2001:db8:{n >> 16 & 0xFFFF:x}:{n & 0xFFFF:x}::1"


@dataclass(frozen=True)
class Site:
    """A started app: the ASGI callable to send requests to, and the FastAPI app (its container)."""

    asgi: ASGIApp
    app: FastAPI


@asynccontextmanager
async def guarded_site(database_url: str, redis_url: str | None) -> AsyncIterator[Site]:
    """An app with rate limits (and so the challenges) on, a low order threshold."""
    settings = app_settings(database_url, redis_url).model_copy(
        update={"rate_limits": "on", "captcha_orders_per_minute": ORDERS_BEFORE_CAPTCHA}
    )
    app = create_app(settings, run_background=False)
    async with LifespanManager(app, startup_timeout=60, shutdown_timeout=60) as manager:
        yield Site(manager.app, app)


@pytest.fixture(scope="module")
async def guarded_pg(pg_url: str, redis_url: str) -> AsyncIterator[Site]:
    async with guarded_site(pg_url, redis_url) as site:
        yield site


@pytest.fixture(scope="module")
def guarded_sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A migrated SQLite file of this module's own (migrated outside any running loop)."""
    path: Path = tmp_path_factory.mktemp("antibot") / "railbook.db"
    url = f"sqlite+aiosqlite:///{path}"
    upgrade(url)
    return url


@pytest.fixture(scope="module")
async def guarded_sqlite(guarded_sqlite_url: str) -> AsyncIterator[Site]:
    async with guarded_site(guarded_sqlite_url, None) as site:
        yield site


@pytest.fixture(autouse=True, scope="module")
def _apps_ready(
    pg_client: httpx.AsyncClient, sqlite_client: httpx.AsyncClient, guarded_pg: Site, guarded_sqlite: Site
) -> None:
    """Start every app through ordinary fixture resolution, so the parametrised fixtures find them
    ready (set-up of an async fixture cannot start from inside another one's running loop)."""


@pytest.fixture(params=["pg", "sqlite"])
def guarded(request: pytest.FixtureRequest) -> Site:
    """The app with rate limits on, in both configurations."""
    site: Site = request.getfixturevalue(f"guarded_{request.param}")
    return site


def site_of(client: httpx.AsyncClient) -> Site:
    """The site behind one of the session's clients (``tests.support.app_client``)."""
    transport = client._transport
    assert isinstance(transport, httpx.ASGITransport)
    return Site(transport.app, client.app)  # type: ignore[attr-defined]


@asynccontextmanager
async def speaking_from(site: Site, host: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client of ``site`` whose requests come from the address ``host``."""
    transport = httpx.ASGITransport(app=site.asgi, client=(host, 40_000))
    async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=30) as client:
        client.app = site.app  # type: ignore[attr-defined]
        yield client


def container_of(client: httpx.AsyncClient) -> Container:
    container: Container = client.app.state.container  # type: ignore[attr-defined]
    return container


def error_of(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code, r.text
    assert isinstance(error["message"], str) and error["message"]
    details: dict[str, Any] = error["details"]
    return details


async def new_captcha(client: httpx.AsyncClient) -> tuple[str, str]:
    """A captcha's id and its right answer (read from the store, not from the picture)."""
    r = await client.get("/api/v1/captcha")
    assert r.status_code == 200, r.text
    captcha_id = r.json()["captcha_id"]
    answer = await container_of(client).captchas.peek(captcha_id)
    assert answer is not None
    return captcha_id, answer


async def try_login(client: httpx.AsyncClient, mobile: str, password: str, **captcha: str) -> httpx.Response:
    return await client.post("/api/v1/auth/login", json={"mobile": mobile, "password": password, **captcha})


def fresh_mobile() -> str:
    return "188" + unique()[-8:].rjust(8, "0")


# ---- captcha ----------------------------------------------------------------------------------


async def test_captcha_is_a_png_data_url(guarded: Site) -> None:
    async with speaking_from(guarded, address()) as client:
        r = await client.get("/api/v1/captcha")
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) == {"captcha_id", "image"}
        prefix = "data:image/png;base64,"
        assert body["image"].startswith(prefix)
        png = base64.b64decode(body["image"][len(prefix) :], validate=True)
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        answer = await container_of(client).captchas.peek(body["captcha_id"])
        assert answer is not None and len(answer) == 4 and set(answer) <= set(CAPTCHA_ALPHABET)
        assert not set("0O1IL") & set(answer)
        other = (await client.get("/api/v1/captcha")).json()
        assert other["captcha_id"] != body["captcha_id"]


# ---- login throttle -----------------------------------------------------------------------------


async def test_failed_logins_need_a_captcha_then_a_right_one_logs_in(guarded: Site) -> None:
    async with speaking_from(guarded, address()) as client:
        member = await register(client)
        mobile, password = member["mobile"], member["password"]
        for _ in range(5):
            error_of(await try_login(client, mobile, "wrong-password-1"), 401, "BAD_CREDENTIALS")

        # Even the right password is refused now, and the details say what is needed.
        details = error_of(await try_login(client, mobile, password), 403, "CAPTCHA_REQUIRED")
        assert details["captcha_required"] is True
        assert details["captcha_url"] == "/api/v1/captcha"
        assert details["reason"] == "failed_logins"

        # A wrong answer: refused, and that captcha is used up.
        captcha_id, answer = await new_captcha(client)
        wrong = "2222" if answer != "2222" else "3333"
        r = await try_login(client, mobile, password, captcha_id=captcha_id, captcha_answer=wrong)
        assert error_of(r, 403, "CAPTCHA_REQUIRED")["reason"] == "wrong_answer"
        r = await try_login(client, mobile, password, captcha_id=captcha_id, captcha_answer=answer)
        error_of(r, 403, "CAPTCHA_REQUIRED")

        # A right answer is good once: reused, it is refused.
        captcha_id, answer = await new_captcha(client)
        r = await try_login(client, mobile, "wrong-password-1", captcha_id=captcha_id, captcha_answer=answer)
        error_of(r, 401, "BAD_CREDENTIALS")
        r = await try_login(client, mobile, password, captcha_id=captcha_id, captcha_answer=answer)
        error_of(r, 403, "CAPTCHA_REQUIRED")

        # A new captcha, answered in lower case with spaces around it, and the right password.
        captcha_id, answer = await new_captcha(client)
        r = await try_login(
            client, mobile, password, captcha_id=captcha_id, captcha_answer=f" {answer.lower()} "
        )
        assert r.status_code == 200, r.text
        assert r.json()["token_type"] == "bearer"
        # The counter was cleared: the next login needs no captcha.
        r = await try_login(client, mobile, password)
        assert r.status_code == 200, r.text


async def test_an_unknown_captcha_is_refused(guarded: Site) -> None:
    async with speaking_from(guarded, address()) as client:
        member = await register(client)
        for _ in range(5):
            await try_login(client, member["mobile"], "wrong-password-1")
        r = await try_login(
            client, member["mobile"], member["password"], captcha_id="no-such-captcha", captcha_answer="ABCD"
        )
        error_of(r, 403, "CAPTCHA_REQUIRED")


async def test_failures_from_one_address_need_a_captcha_for_every_mobile(guarded: Site) -> None:
    noisy = address()
    async with speaking_from(guarded, address()) as quiet:
        member = await register(quiet)
    async with speaking_from(guarded, noisy) as client:
        for _ in range(20):  # twenty mobiles, one failure each: no mobile reaches its own limit
            error_of(await try_login(client, fresh_mobile(), "wrong-password-1"), 401, "BAD_CREDENTIALS")
        r = await try_login(client, member["mobile"], member["password"])
        error_of(r, 403, "CAPTCHA_REQUIRED")
        captcha_id, answer = await new_captcha(client)
        r = await try_login(
            client, member["mobile"], member["password"], captcha_id=captcha_id, captcha_answer=answer
        )
        assert r.status_code == 200, r.text
    async with speaking_from(guarded, address()) as elsewhere:
        assert (await try_login(elsewhere, member["mobile"], member["password"])).status_code == 200


async def test_rate_limits_off_turns_the_login_challenge_off(client: httpx.AsyncClient) -> None:
    member = await register(client)
    for _ in range(7):
        error_of(await try_login(client, member["mobile"], "wrong-password-1"), 401, "BAD_CREDENTIALS")
    assert (await try_login(client, member["mobile"], member["password"])).status_code == 200


# ---- order challenge ----------------------------------------------------------------------------


async def test_orders_faster_than_a_person_need_a_captcha(guarded: Site) -> None:
    async with speaking_from(guarded, address()) as client:
        day = await make_train_day(client, await admin(client), rows=6)
        member = await register(client)
        headers = member["headers"]
        first, second = await add_passenger(client, headers), await add_passenger(client, headers)
        # The pace is counted per minute: start early enough in one for the whole test to fit.
        await wait_until(lambda: time.time() % 60 < 50, timeout=15, what="the start of a minute")
        started = int(time.time()) // 60

        answers = []
        for _ in range(ORDERS_BEFORE_CAPTCHA + 1):
            r = await client.post("/api/v1/orders", json=order_body(day, [first]), headers=headers)
            answers.append(r.status_code)
            if r.status_code == 403:
                break
        assert answers[0] == 202, answers
        details = error_of(r, 403, "CAPTCHA_REQUIRED")
        assert details["reason"] == "orders_too_fast"

        body = order_body(day, [second])
        captcha_id, answer = await new_captcha(client)
        wrong = "2222" if answer != "2222" else "3333"
        r = await client.post(
            "/api/v1/orders",
            json={**body, "captcha_id": captcha_id, "captcha_answer": wrong},
            headers=headers,
        )
        assert error_of(r, 403, "CAPTCHA_REQUIRED")["reason"] == "wrong_answer"
        # That captcha is used up, even with its right answer.
        r = await client.post(
            "/api/v1/orders",
            json={**body, "captcha_id": captcha_id, "captcha_answer": answer},
            headers=headers,
        )
        error_of(r, 403, "CAPTCHA_REQUIRED")

        captcha_id, answer = await new_captcha(client)
        r = await client.post(
            "/api/v1/orders",
            json={**body, "captcha_id": captcha_id, "captcha_answer": answer},
            headers=headers,
        )
        assert r.status_code == 202, r.text
        assert int(time.time()) // 60 == started  # the counts above all fell in one minute


async def test_rate_limits_off_turns_the_order_challenge_off(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    day = await make_train_day(client, admin_headers)
    member = await register(client)
    pid = await add_passenger(client, member["headers"])
    codes = set()
    for _ in range(client_threshold(client) + 2):
        r = await client.post("/api/v1/orders", json=order_body(day, [pid]), headers=member["headers"])
        codes.add(r.status_code)
    assert codes <= {202, 409}, codes


def client_threshold(client: httpx.AsyncClient) -> int:
    return container_of(client).settings.captcha_orders_per_minute


# ---- blocklist ----------------------------------------------------------------------------------


async def test_blocklist_needs_an_admin(client: httpx.AsyncClient) -> None:
    member = await register(client)
    body = {"mobile": fresh_mobile(), "reason": "test"}
    assert (await client.post("/api/v1/admin/blocklist", json=body)).status_code == 401
    assert (await client.get("/api/v1/admin/blocklist")).status_code == 401
    assert (await client.delete("/api/v1/admin/blocklist/1")).status_code == 401
    headers = member["headers"]
    error_of(await client.post("/api/v1/admin/blocklist", json=body, headers=headers), 404, "NOT_FOUND")
    error_of(await client.get("/api/v1/admin/blocklist", headers=headers), 404, "NOT_FOUND")
    error_of(await client.delete("/api/v1/admin/blocklist/1", headers=headers), 404, "NOT_FOUND")


async def test_blocklist_add_list_delete(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> None:
    mobile = fresh_mobile()
    r = await client.post(
        "/api/v1/admin/blocklist", json={"mobile": mobile, "reason": "scalping"}, headers=admin_headers
    )
    assert r.status_code == 201, r.text
    block_id = r.json()["block_id"]
    assert isinstance(block_id, int)
    r = await client.post(
        "/api/v1/admin/blocklist",
        json={
            "ip": "198.51.100.77/24",
            "reason": "a scraper's network",
            "until": "2099-01-01T00:00:00+08:00",
        },
        headers=admin_headers,
    )
    assert r.status_code == 201, r.text
    network = r.json()
    assert network["ip"] == "198.51.100.0/24"
    assert network["until"].startswith("2098-12-31T16:00:00")

    listed = (await client.get("/api/v1/admin/blocklist", headers=admin_headers)).json()
    by_id = {entry["block_id"]: entry for entry in listed}
    assert by_id[block_id]["mobile"] == mobile and by_id[block_id]["ip"] is None
    assert by_id[block_id]["reason"] == "scalping" and by_id[block_id]["until"] is None
    assert by_id[block_id]["active"] is True
    assert network["block_id"] in by_id

    for entry_id in (block_id, network["block_id"]):
        r = await client.delete(f"/api/v1/admin/blocklist/{entry_id}", headers=admin_headers)
        assert r.status_code == 204, r.text
    error_of(
        await client.delete(f"/api/v1/admin/blocklist/{block_id}", headers=admin_headers),
        404,
        "BLOCK_NOT_FOUND",
    )
    listed = (await client.get("/api/v1/admin/blocklist", headers=admin_headers)).json()
    assert block_id not in {entry["block_id"] for entry in listed}


@pytest.mark.parametrize(
    "body",
    [
        {"reason": "neither"},
        {"mobile": "13912345678", "ip": "203.0.113.1", "reason": "both"},
        {"mobile": "12345678901", "reason": "no such prefix"},
        {"mobile": "1391234567", "reason": "too short"},
        {"ip": "203.0.113.300", "reason": "no such address"},
        {"ip": "not-an-address", "reason": "no address at all"},
        {"mobile": "13912345678", "reason": ""},
        {"mobile": "13912345678"},
        {"mobile": "13912345678", "reason": "far", "until": "9999-12-31T23:59:59-23:59"},
        {"mobile": "13912345678", "reason": "x", "extra": 1},
    ],
)
async def test_blocklist_refuses_bad_entries(
    client: httpx.AsyncClient, admin_headers: dict[str, str], body: dict[str, Any]
) -> None:
    r = await client.post("/api/v1/admin/blocklist", json=body, headers=admin_headers)
    error_of(r, 422, "VALIDATION_ERROR")


async def test_a_blocked_mobile_cannot_log_in_or_order(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    """With RATE_LIMITS=off (the session's apps): the blocklist stays on."""
    day = await make_train_day(client, admin_headers)
    member = await register(client)
    pid = await add_passenger(client, member["headers"])
    r = await client.post(
        "/api/v1/admin/blocklist", json={"mobile": member["mobile"], "reason": "bot"}, headers=admin_headers
    )
    assert r.status_code == 201, r.text
    block_id = r.json()["block_id"]
    try:
        details = error_of(await try_login(client, member["mobile"], member["password"]), 403, "BLOCKED")
        assert details["until"] is None
        r = await client.post("/api/v1/orders", json=order_body(day, [pid]), headers=member["headers"])
        error_of(r, 403, "BLOCKED")
        other = await register(client)  # others are not affected
        other_pid = await add_passenger(client, other["headers"])
        r = await client.post("/api/v1/orders", json=order_body(day, [other_pid]), headers=other["headers"])
        assert r.status_code == 202, r.text
    finally:
        r = await client.delete(f"/api/v1/admin/blocklist/{block_id}", headers=admin_headers)
        assert r.status_code == 204, r.text
    assert (await try_login(client, member["mobile"], member["password"])).status_code == 200
    r = await client.post("/api/v1/orders", json=order_body(day, [pid]), headers=member["headers"])
    assert r.status_code == 202, r.text


async def test_a_blocked_address_cannot_log_in_or_order(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    day = await make_train_day(client, admin_headers)
    member = await register(client)
    pid = await add_passenger(client, member["headers"])
    host = f"203.0.113.{random.randrange(1, 255)}"
    r = await client.post(
        "/api/v1/admin/blocklist", json={"ip": f"{host}/30", "reason": "scraper"}, headers=admin_headers
    )
    assert r.status_code == 201, r.text
    block_id = r.json()["block_id"]
    site = site_of(client)
    try:
        async with speaking_from(site, host) as blocked, speaking_from(site, f"::ffff:{host}") as mapped:
            error_of(await try_login(blocked, member["mobile"], member["password"]), 403, "BLOCKED")
            error_of(await try_login(mapped, member["mobile"], member["password"]), 403, "BLOCKED")
            r = await blocked.post("/api/v1/orders", json=order_body(day, [pid]), headers=member["headers"])
            error_of(r, 403, "BLOCKED")
        # The same member from another address is served.
        assert (await try_login(client, member["mobile"], member["password"])).status_code == 200
    finally:
        await client.delete(f"/api/v1/admin/blocklist/{block_id}", headers=admin_headers)


async def test_a_block_ends_at_its_until(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> None:
    member = await register(client)
    past = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)).isoformat()
    r = await client.post(
        "/api/v1/admin/blocklist",
        json={"mobile": member["mobile"], "reason": "over", "until": past},
        headers=admin_headers,
    )
    assert r.status_code == 201, r.text
    assert r.json()["active"] is False
    assert (await try_login(client, member["mobile"], member["password"])).status_code == 200

    soon = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=3)
    r = await client.post(
        "/api/v1/admin/blocklist",
        json={"mobile": member["mobile"], "reason": "cooling off", "until": soon.isoformat()},
        headers=admin_headers,
    )
    assert r.status_code == 201, r.text
    details = error_of(await try_login(client, member["mobile"], member["password"]), 403, "BLOCKED")
    assert details["until"] is not None

    async def served() -> bool:
        return (await try_login(client, member["mobile"], member["password"])).status_code == 200

    await wait_until(served, timeout=15, interval=0.2, what="the block to end")
    listed = (await client.get("/api/v1/admin/blocklist", headers=admin_headers)).json()
    mine = [e for e in listed if e["mobile"] == member["mobile"]]
    assert len(mine) == 2 and not any(e["active"] for e in mine)


# ---- mobiles ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mobile", ["12345678901", "10012345678", "16012345678", "17912345678", "15412345678"]
)
async def test_registration_refuses_unassigned_mobile_prefixes(
    client: httpx.AsyncClient, mobile: str
) -> None:
    r = await client.post(
        "/api/v1/auth/register", json={"mobile": mobile, "password": "s3cret-pass", "name": "王五"}
    )
    details = error_of(r, 422, "VALIDATION_ERROR")
    assert "mobile" in {f["field"] for f in details["fields"]}
