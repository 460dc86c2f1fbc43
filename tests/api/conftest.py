"""HTTP-level fixtures: the real app (real PostgreSQL + Redis, or embedded SQLite) driven through httpx.

Apps are session-scoped (one per store kind); tests keep out of each other's way by using fresh
mobiles, train codes and dates (see ``tests.support.unique``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.support import admin, app_client, app_settings


@pytest.fixture(scope="session")
async def pg_client(pg_url: str, redis_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The distributed configuration: PostgreSQL + Redis, in-process worker loops running."""
    async with app_client(app_settings(pg_url, redis_url)) as client:
        yield client


@pytest.fixture(scope="session")
async def sqlite_client(sqlite_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The embedded configuration: SQLite + in-process allocator and queue."""
    async with app_client(app_settings(sqlite_url, None)) as client:
        yield client


@pytest.fixture(scope="session", params=["pg", "sqlite"])
def client(request: pytest.FixtureRequest) -> httpx.AsyncClient:
    """Both configurations: a test using this runs once against each. (A plain fixture: set-up of an
    async fixture cannot start from inside another async fixture's running loop.)"""
    name = "pg_client" if request.param == "pg" else "sqlite_client"
    fixture: httpx.AsyncClient = request.getfixturevalue(name)
    return fixture


@pytest.fixture(scope="session")
async def admin_headers_pg(pg_client: httpx.AsyncClient) -> dict[str, str]:
    return await admin(pg_client)


@pytest.fixture(scope="session")
async def admin_headers_sqlite(sqlite_client: httpx.AsyncClient) -> dict[str, str]:
    return await admin(sqlite_client)


@pytest.fixture
async def admin_headers(client: httpx.AsyncClient) -> dict[str, str]:
    return await admin(client)
