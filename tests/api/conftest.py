"""HTTP-level fixtures: the real app (real PostgreSQL + Redis, or embedded SQLite) driven through httpx.

Apps are session-scoped (one per store kind); tests keep out of each other's way by using fresh
mobiles, train codes and dates (see ``tests.support.unique``).

Every error the shared apps answer is checked against their OpenAPI document after each test
(``_answers_are_declared``): an operation that answers a status, or a code, its document does not
declare fails the test that made it do so. The API tests exercise the refusals of every route, so
a code raised somewhere down a route's code path and missing from ``api.openapi.ROUTE_ERRORS`` is
caught where it first shows."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.support import admin, app_client, app_settings

# (app, method, path, status, code) of every error answered by a shared app since the last check.
_ERRORS: list[tuple[FastAPI, str, str, int, str]] = []
# Not the contract's business: a route that is not there, or a method it does not take, and a crash
# (every test that meets one fails on its own).
_UNDECLARED_BY_DESIGN = {405, 500}


def _recording(client: httpx.AsyncClient) -> None:
    app: FastAPI = client.app  # type: ignore[attr-defined]

    async def record(response: httpx.Response) -> None:
        if response.status_code < 400 or response.status_code in _UNDECLARED_BY_DESIGN:
            return
        await response.aread()
        try:
            code = str(response.json()["error"]["code"])
        except (ValueError, KeyError, TypeError):
            code = ""
        request = response.request
        _ERRORS.append((app, request.method, request.url.path, response.status_code, code))

    client.event_hooks["response"].append(record)


def _operation(spec: dict[str, Any], method: str, path: str) -> dict[str, Any] | None:
    """The operation of the document that serves ``method path`` (literal segments before
    parameters), or None when no documented route does."""
    templates = sorted(spec.get("paths", {}), key=lambda t: (t.count("{"), t))
    for template in templates:
        pattern = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, path):
            operation: dict[str, Any] | None = spec["paths"][template].get(method.lower())
            if operation is not None:
                return operation
    return None


@pytest.fixture(autouse=True)
def _answers_are_declared() -> Iterator[None]:
    """After each test: every error answered by a documented operation is declared by it, its code
    named in that status's description."""
    _ERRORS.clear()
    yield
    undeclared = []
    for app, method, path, status, code in _ERRORS:
        operation = _operation(app.openapi(), method, path)
        if operation is None:
            continue
        declared = operation["responses"].get(str(status))
        if declared is None or (code and code not in re.findall(r"[A-Z][A-Z_]*", declared["description"])):
            undeclared.append((method, path, status, code))
    _ERRORS.clear()
    assert not undeclared, f"answers not declared in /openapi.json: {sorted(set(undeclared))}"


@pytest.fixture(scope="session")
async def pg_client(pg_url: str, redis_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The distributed configuration: PostgreSQL + Redis, in-process worker loops running."""
    async with app_client(app_settings(pg_url, redis_url)) as client:
        _recording(client)
        yield client


@pytest.fixture(scope="session")
async def sqlite_client(sqlite_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The embedded configuration: SQLite + in-process allocator and queue."""
    async with app_client(app_settings(sqlite_url, None)) as client:
        _recording(client)
        yield client


@pytest.fixture(scope="session", params=["pg", "sqlite"])
def client(
    request: pytest.FixtureRequest, pg_client: httpx.AsyncClient, sqlite_client: httpx.AsyncClient
) -> httpx.AsyncClient:
    """Both configurations: a test using this runs once against each. Both apps are its arguments,
    started by ordinary fixture resolution (set-up of an async fixture cannot start from inside
    another async fixture's running loop, as a look-up by name here would)."""
    return pg_client if request.param == "pg" else sqlite_client


@pytest.fixture(scope="session")
async def admin_headers_pg(pg_client: httpx.AsyncClient) -> dict[str, str]:
    return await admin(pg_client)


@pytest.fixture(scope="session")
async def admin_headers_sqlite(sqlite_client: httpx.AsyncClient) -> dict[str, str]:
    return await admin(sqlite_client)


@pytest.fixture
async def admin_headers(client: httpx.AsyncClient) -> dict[str, str]:
    return await admin(client)
