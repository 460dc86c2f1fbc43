"""The error shape everywhere, and 503 + Retry-After (never a 500 or a hang) while a store is down."""

from __future__ import annotations

import socket
import sqlite3
from pathlib import Path

import asyncpg
import httpx
import pytest
import sqlalchemy.exc as sa_exc
from asgi_lifespan import LifespanManager
from redis import exceptions as redis_exc
from sqlalchemy import create_engine, make_url, text
from starlette.types import Receive, Scope, Send

from railbook.adapters.db.engine import make_engine
from railbook.adapters.outage import is_store_outage
from railbook.api.app import GuardMiddleware, create_app
from railbook.bootstrap import make_redis
from tests.support import app_settings, container_for


def assert_error_shape(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error["code"], str) and error["code"] == error["code"].upper()
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["details"], dict)
    if code is not None:
        assert error["code"] == code, body
    return error


async def test_unknown_path_is_404_in_the_error_shape(client: httpx.AsyncClient) -> None:
    assert_error_shape(await client.get("/api/v1/no-such-thing"), 404, "NOT_FOUND")


async def test_wrong_method_is_405_in_the_error_shape(client: httpx.AsyncClient) -> None:
    r = await client.delete("/healthz")
    assert_error_shape(r, 405, "METHOD_NOT_ALLOWED")
    assert r.headers["allow"] == "GET"


async def test_405_allows_every_method_of_the_path(client: httpx.AsyncClient) -> None:
    """A path served by several routes (one per method) names all of them in ``Allow``."""
    r = await client.request("OPTIONS", "/api/v1/admin/blocklist")
    assert_error_shape(r, 405, "METHOD_NOT_ALLOWED")
    assert r.headers["allow"] == "GET, POST"
    r = await client.put("/api/v1/passengers")
    assert r.status_code == 405 and r.headers["allow"] == "GET, POST"


async def test_malformed_json_is_422(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/api/v1/auth/register", content=b'{"mobile": "1390000', headers={"content-type": "application/json"}
    )
    assert_error_shape(r, 422, "VALIDATION_ERROR")


async def test_wrong_types_name_the_fields(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/v1/auth/register", json={"mobile": 13900000000, "password": [], "name": {}})
    error = assert_error_shape(r, 422, "VALIDATION_ERROR")
    fields = {f["field"] for f in error["details"]["fields"]}
    assert {"mobile", "password", "name"} <= fields


async def test_ten_megabyte_body_is_refused_before_it_is_read(client: httpx.AsyncClient) -> None:
    body = b'{"name": "' + b"x" * (10 * 1024 * 1024) + b'"}'
    r = await client.post("/api/v1/auth/register", content=body, headers={"content-type": "application/json"})
    assert_error_shape(r, 413, "PAYLOAD_TOO_LARGE")


async def test_health_and_metrics(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["database"] == "ok"
    metrics = await client.get("/metrics")
    assert metrics.status_code == 200
    assert "railbook_http_requests_total" in metrics.text
    assert "railbook_redis_batched_commands_total" in metrics.text  # the accept path's Redis batching


async def test_openapi_describes_the_contract(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    paths = set(spec["paths"])
    for path in (
        "/api/v1/auth/register",
        "/api/v1/auth/login",
        "/api/v1/me",
        "/api/v1/passengers",
        "/api/v1/trains/search",
        "/api/v1/orders",
        "/api/v1/orders/{order_id}",
        "/api/v1/admin/stations",
        "/api/v1/admin/trains",
        "/api/v1/admin/sales/open",
    ):
        assert path in paths, path


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_database_down_answers_503_with_retry_after(pg_url: str, redis_url: str) -> None:
    """A real PostgreSQL that goes away: the app keeps answering, 503 UNAVAILABLE, then recovers."""
    settings = app_settings(pg_url, redis_url)
    async with container_for(settings) as container:
        app = create_app(settings, container=container)
        async with LifespanManager(app) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
                login = {"mobile": "13812345678", "password": "whatever-123"}
                ok = await http.post("/api/v1/auth/login", json=login)
                assert ok.status_code == 401  # the store answers: just unknown credentials
                # Swap in an engine that points at a port where nothing listens.
                from railbook.adapters.db.engine import make_engine, make_sessionmaker
                from railbook.adapters.db.members import SqlMembers

                good_engine, good_maker, good_members = (
                    container.engine,
                    container.sessionmaker,
                    container.members,
                )
                dead_url = make_url(pg_url).set(port=_closed_port())
                dead = make_engine(dead_url.render_as_string(hide_password=False))
                container.engine, container.sessionmaker = dead, make_sessionmaker(dead)
                # Login reads the member store.
                container.members = SqlMembers(container.sessionmaker, traveller_secret=container.jwt_secret)
                r = await http.post("/api/v1/auth/login", json=login)
                assert_error_shape(r, 503, "UNAVAILABLE")
                assert int(r.headers["retry-after"]) >= 1
                ready = await http.get("/readyz")
                assert ready.status_code == 503 and "retry-after" in ready.headers
                container.engine, container.sessionmaker = good_engine, good_maker
                container.members = good_members
                await dead.dispose()
                assert (await http.post("/api/v1/auth/login", json=login)).status_code == 401


@pytest.mark.parametrize(
    "path", ["/api/v1/me", "/api/v1/passengers", "/api/v1/orders", "/api/v1/admin/stations"]
)
async def test_missing_or_tampered_token_is_401(client: httpx.AsyncClient, path: str) -> None:
    assert_error_shape(await client.get(path), 401)
    bad = {"Authorization": "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.AAAA"}
    assert_error_shape(await client.get(path, headers=bad), 401)


# --------------------------------------------------------------------------------------------
# Store outages are told by the error's type (or SQLSTATE, SQLite result code, Redis reply type):
# an outage answers 503 and workers wait and retry; anything else is a defect and must surface.
# The classification of each kind of error is in tests/unit/test_outage.py; here, real stores.


async def test_a_missing_relation_is_not_an_outage_on_postgresql(pg_url: str) -> None:
    """A real PostgreSQL's answer through SQLAlchemy and asyncpg: a defect, never retried as an outage
    (its message says "does not exist", as a lost connection's does)."""
    engine = make_engine(pg_url)
    try:
        async with engine.connect() as conn:
            with pytest.raises(sa_exc.ProgrammingError) as caught:
                await conn.execute(text("SELECT * FROM no_such_relation"))
    finally:
        await engine.dispose()
    assert "does not exist" in str(caught.value)
    assert not is_store_outage(caught.value)


async def test_a_terminated_postgresql_connection_is_an_outage(pg_url: str) -> None:
    """The server ends the session (57P01, as on a restart): the next statement's error is an outage."""
    engine = make_engine(pg_url)
    try:
        async with engine.connect() as victim, engine.connect() as admin:
            pid = (await victim.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            await admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            with pytest.raises(sa_exc.DBAPIError) as caught:
                await victim.execute(text("SELECT 1"))
    finally:
        await engine.dispose()
    assert is_store_outage(caught.value)


async def test_an_unreachable_redis_is_an_outage() -> None:
    client = make_redis(f"redis://127.0.0.1:{_closed_port()}/0")
    try:
        with pytest.raises(redis_exc.ConnectionError) as caught:
            await client.ping()
    finally:
        await client.aclose()
    assert is_store_outage(caught.value)


def test_a_locked_sqlite_database_is_an_outage_and_a_missing_table_is_not(tmp_path: Path) -> None:
    """SQLite's "database is locked" (SQLITE_BUSY) waits and retries; "no such table" is a defect, though
    both are OperationalErrors."""
    path = tmp_path / "locked.db"
    holder = sqlite3.connect(path, isolation_level=None)
    engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 0})
    try:
        holder.execute("BEGIN IMMEDIATE")
        with engine.connect() as conn:
            with pytest.raises(sa_exc.OperationalError) as locked:
                conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
            with pytest.raises(sa_exc.OperationalError) as missing:
                conn.exec_driver_sql("SELECT * FROM no_such_table")
    finally:
        holder.close()
        engine.dispose()
    assert "database is locked" in str(locked.value)
    assert is_store_outage(locked.value)
    assert "no such table" in str(missing.value)
    assert not is_store_outage(missing.value)


@pytest.mark.parametrize(
    ("raised", "status", "code"),
    [
        (ValueError("a defect"), 500, "INTERNAL_ERROR"),
        (asyncpg.CannotConnectNowError("the database system is starting up"), 503, "UNAVAILABLE"),
        (redis_exc.BusyLoadingError("Redis is loading the dataset in memory"), 503, "UNAVAILABLE"),
    ],
)
async def test_the_guard_answers_an_escaped_exception_in_the_error_shape(
    raised: Exception, status: int, code: str
) -> None:
    """What escapes every handler still gets the envelope: 503 + Retry-After for an outage, else 500."""

    async def failing(scope: Scope, receive: Receive, send: Send) -> None:
        raise raised

    transport = httpx.ASGITransport(app=GuardMiddleware(failing))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        r = await http.get("/api/v1/anything")
    assert_error_shape(r, status, code)
    assert r.headers["content-type"] == "application/json"
    assert ("retry-after" in r.headers) == (status == 503)
