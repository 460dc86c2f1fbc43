"""HTTP-level fixtures: the real app (real PostgreSQL + Redis, or embedded SQLite) driven through httpx.

Apps are session-scoped (one per store kind); tests keep out of each other's way by using fresh
mobiles, train codes and dates (see ``unique``)."""

from __future__ import annotations

import itertools
import os
import random
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from railbook.api.app import create_app
from railbook.config import Settings

ADMIN_MOBILE = "13800000000"
ADMIN_PASSWORD = "admin-secret-1"
_counter = itertools.count(random.randrange(10_000, 90_000))


def unique(prefix: str = "") -> str:
    """A value no other test of this run uses (for mobiles, train codes, names)."""
    return f"{prefix}{next(_counter)}{os.getpid() % 100:02d}"


def test_settings(database_url: str, redis_url: str | None) -> Settings:
    return Settings(
        database_url=database_url,
        redis_url=redis_url,
        admin_mobile=ADMIN_MOBILE,
        admin_password=ADMIN_PASSWORD,
        jwt_secret="test-secret-" + "x" * 32,
        argon2_time_cost=1,
        argon2_memory_cost=1024,
        rate_limits="off",
        load_sample_data=False,
    )


test_settings.__test__ = False  # type: ignore[attr-defined]  # a factory, not a test


async def _client(settings: Settings, run_background: bool = True) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, run_background=run_background)
    async with LifespanManager(app, startup_timeout=60, shutdown_timeout=60) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=30) as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


@pytest.fixture(scope="session")
async def pg_client(pg_url: str, redis_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The distributed configuration: PostgreSQL + Redis, in-process worker loops running."""
    async for client in _client(test_settings(pg_url, redis_url)):
        yield client


@pytest.fixture(scope="session")
async def sqlite_client(sqlite_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The embedded configuration: SQLite + in-process allocator and queue."""
    async for client in _client(test_settings(sqlite_url, None)):
        yield client


@pytest.fixture(scope="session", params=["pg", "sqlite"])
def client(request: pytest.FixtureRequest) -> httpx.AsyncClient:
    """Both configurations: a test using this runs once against each. (A plain fixture: set-up of an
    async fixture cannot start from inside another async fixture's running loop.)"""
    name = "pg_client" if request.param == "pg" else "sqlite_client"
    fixture: httpx.AsyncClient = request.getfixturevalue(name)
    return fixture


async def login(client: httpx.AsyncClient, mobile: str, password: str) -> dict[str, str]:
    r = await client.post("/api/v1/auth/login", json={"mobile": mobile, "password": password})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


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


@pytest.fixture(scope="session")
async def admin_headers_pg(pg_client: httpx.AsyncClient) -> dict[str, str]:
    return await login(pg_client, ADMIN_MOBILE, ADMIN_PASSWORD)


@pytest.fixture(scope="session")
async def admin_headers_sqlite(sqlite_client: httpx.AsyncClient) -> dict[str, str]:
    return await login(sqlite_client, ADMIN_MOBILE, ADMIN_PASSWORD)


@pytest.fixture
async def admin_headers(client: httpx.AsyncClient) -> dict[str, str]:
    return await login(client, ADMIN_MOBILE, ADMIN_PASSWORD)
