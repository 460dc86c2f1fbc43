"""What several test modules build the same way: the app's settings, the app behind an httpx client,
a container on given stores, members and train-days made over HTTP, and polling for an observable
condition (never a sleep of a guessed length)."""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect
import itertools
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import httpx
from asgi_lifespan import LifespanManager

from railbook.api.app import create_app
from railbook.bootstrap import Container, build_container
from railbook.config import Settings
from railbook.domain.identity import compose_id_card
from railbook.kit.clock import beijing_today
from tests.naming import station_code, train_code

ADMIN_MOBILE = "13800000000"
ADMIN_PASSWORD = "admin-secret-1"
JWT_SECRET = "test-secret-" + "x" * 32

T = TypeVar("T")

_counter = itertools.count(random.randrange(10_000, 90_000))
_cards = itertools.count(random.randrange(1, 400))


def unique(prefix: str = "") -> str:
    """A value no other test of this run uses (for mobiles, train codes, names)."""
    return f"{prefix}{next(_counter)}{os.getpid() % 100:02d}"


def app_settings(database_url: str, redis_url: str | None) -> Settings:
    """Settings of an app under test: the known admin, cheap password hashing, no rate limits."""
    return Settings(
        database_url=database_url,
        redis_url=redis_url,
        admin_mobile=ADMIN_MOBILE,
        admin_password=ADMIN_PASSWORD,
        jwt_secret=JWT_SECRET,
        argon2_time_cost=1,
        argon2_memory_cost=1024,
        rate_limits="off",
        load_sample_data=False,
    )


@asynccontextmanager
async def app_client(
    settings: Settings, *, run_background: bool = True, request_timeout: float = 30
) -> AsyncIterator[httpx.AsyncClient]:
    """The app started (lifespan) on these settings, driven in-process; ``client.app`` is the app."""
    app = create_app(settings, run_background=run_background)
    async with LifespanManager(app, startup_timeout=60, shutdown_timeout=60) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test", timeout=request_timeout
        ) as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


@asynccontextmanager
async def container_for(settings: Settings) -> AsyncIterator[Container]:
    """A container wired on these settings (what a process builds at start), closed afterwards."""
    container = await build_container(settings)
    try:
        yield container
    finally:
        await container.close()


async def wait_until(
    predicate: Callable[[], Awaitable[T] | T],
    *,
    timeout: float = 10.0,  # noqa: ASYNC109 - a deadline for the polling, not for one await
    interval: float = 0.05,
    what: str = "the condition",
) -> T:
    """Poll ``predicate`` (plain or async) until it returns something truthy, and return that; an
    AssertionError naming ``what`` once ``timeout`` seconds have passed without it."""
    deadline = time.monotonic() + timeout
    while True:
        outcome = predicate()
        value: T = await outcome if inspect.isawaitable(outcome) else outcome  # type: ignore[assignment]
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


async def login(client: httpx.AsyncClient, mobile: str, password: str) -> dict[str, str]:
    """Bearer headers of a member who logs in with these credentials."""
    r = await client.post("/api/v1/auth/login", json={"mobile": mobile, "password": password})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


async def admin(client: httpx.AsyncClient) -> dict[str, str]:
    """Bearer headers of the configured admin."""
    return await login(client, ADMIN_MOBILE, ADMIN_PASSWORD)


async def register(client: httpx.AsyncClient, name: str = "张三") -> dict[str, Any]:
    """A new member, logged in: returns {"mobile", "password", "headers", "member_id"}."""
    mobile = "139" + unique()[-8:].rjust(8, "0")
    password = "pass-" + unique()
    r = await client.post(
        "/api/v1/auth/register", json={"mobile": mobile, "password": password, "name": name}
    )
    assert r.status_code == 201, r.text
    headers = await login(client, mobile, password)
    return {"mobile": mobile, "password": password, "headers": headers, "member_id": r.json()["member_id"]}


async def add_passenger(client: httpx.AsyncClient, headers: dict[str, str], name: str = "李四") -> int:
    """A new adult passenger of the member with these headers (an id card no other test uses)."""
    # One person per passenger: trips are checked by ID number across members (one person, one seat).
    n = next(_cards)
    card = compose_id_card("110102", dt.date(1950, 1, 1) + dt.timedelta(days=n // 1000), n % 1000)
    r = await client.post(
        "/api/v1/passengers", json={"name": name, "id_card": card, "type": "adult"}, headers=headers
    )
    assert r.status_code == 201, r.text
    return int(r.json()["passenger_id"])


async def make_train_day(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    *,
    rows: int = 4,
    stops: int = 4,
    days_ahead: int = 3,
    start_hour: int = 8,
) -> dict[str, Any]:
    """A new G train with ``stops`` stations and one second-class carriage of ``rows`` rows, on sale;
    it leaves its first stop at ``start_hour``:05 and reaches stop k at (``start_hour`` + k):00."""
    stations = []
    for _ in range(stops):
        name, code = f"站{unique()}", station_code()
        r = await client.post("/api/v1/admin/stations", json={"name": name, "code": code}, headers=admin)
        assert r.status_code == 201, r.text
        stations.append((name, code))
    code = train_code("G")
    spec = {
        "code": code,
        "kind": "G",
        "stops": [
            {
                "station": name,
                **({"arrives": f"{start_hour + k:02d}:00"} if k else {}),
                **({"departs": f"{start_hour + k:02d}:05"} if k < stops - 1 else {}),
                "km": 100 * k,
            }
            for k, (name, _) in enumerate(stations)
        ],
        "carriages": [{"carriage": 1, "seat_class": "second", "rows": rows}],
    }
    r = await client.post("/api/v1/admin/trains", json=spec, headers=admin)
    assert r.status_code == 201, r.text
    date = (beijing_today() + dt.timedelta(days=days_ahead)).isoformat()
    r = await client.post("/api/v1/admin/sales/open", json={"date": date}, headers=admin)
    assert r.status_code == 200, r.text
    return {"train_code": code, "date": date, "stations": stations}


def order_body(
    day: dict[str, Any], passenger_ids: list[int], i: int = 0, j: int = -1, **extra: Any
) -> dict[str, Any]:
    """The JSON of an order of second-class seats for these passengers from stop ``i`` to stop ``j``."""
    return {
        "date": day["date"],
        "train_code": day["train_code"],
        "from": day["stations"][i][0],
        "to": day["stations"][j][0],
        "passengers": [{"passenger_id": p, "seat_class": "second", **extra} for p in passenger_ids],
    }


async def wait_final(client: httpx.AsyncClient, headers: dict[str, str], order_id: str) -> dict[str, Any]:
    """The order once it has left the queue (the committer runs in the app's background)."""

    async def final() -> dict[str, Any] | None:
        r = await client.get(f"/api/v1/orders/{order_id}", headers=headers)
        assert r.status_code == 200, r.text
        return None if r.json()["status"] in ("INIT", "PENDING") else dict(r.json())

    return await wait_until(final, timeout=10.0, interval=0.025, what=f"order {order_id} to leave the queue")
