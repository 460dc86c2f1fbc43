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
from redis._parsers.base import BaseParser
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
    assert_error_shape(await client.delete("/healthz"), 405, "METHOD_NOT_ALLOWED")


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
                container.members = SqlMembers(container.sessionmaker)  # login reads the member store
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


def _redis_reply(reply: str) -> Exception:
    """The exception redis-py raises for this error reply (its own parser picks the class)."""
    return BaseParser.parse_error(reply)


@pytest.mark.parametrize(
    "exc",
    [
        redis_exc.ConnectionError("Error 111 connecting to 127.0.0.1:6390. Connection refused."),
        redis_exc.TimeoutError("Timeout reading from socket"),
        redis_exc.BusyLoadingError("Redis is loading the dataset in memory"),
        _redis_reply("LOADING Redis is loading the dataset in memory"),
        _redis_reply("MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'."),
        _redis_reply("TRYAGAIN Multiple keys request during rehashing of slot"),
        redis_exc.ResponseError("LOADING Redis is loading the dataset in memory"),
        _redis_reply("ERR unknown subcommand 'SETINFO'. Try CLIENT HELP."),
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.CannotConnectNowError("the database system is starting up"),
        asyncpg.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.CrashShutdownError("terminating connection because of crash of another server process"),
        asyncpg.TooManyConnectionsError("sorry, too many clients already"),
        asyncpg.InterfaceError("connection is closed"),
        asyncpg.PostgresConnectionError("connection failure"),
        asyncpg.exceptions.ConnectionFailureError("could not send data"),
        sa_exc.TimeoutError("QueuePool limit of size 10 overflow 10 reached"),
        ConnectionRefusedError(111, "Connection refused"),
        ConnectionResetError(104, "Connection reset by peer"),
        TimeoutError(),
        OSError(113, "No route to host"),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_store_outages_are_told_by_their_type(exc: Exception) -> None:
    assert is_store_outage(exc)


@pytest.mark.parametrize(
    "exc",
    [
        _redis_reply("NOSCRIPT No matching script. Please use EVAL."),
        _redis_reply("WRONGTYPE Operation against a key holding the wrong kind of value"),
        _redis_reply("ERR wrong number of arguments for 'get' command"),
        _redis_reply("READONLY You can't write against a read only replica."),
        redis_exc.DataError("Invalid input of type: 'NoneType'"),
        asyncpg.UndefinedTableError('relation "no_such_table" does not exist'),
        asyncpg.UndefinedColumnError('column "nope" does not exist'),
        asyncpg.UniqueViolationError("duplicate key value violates unique constraint"),
        asyncpg.PostgresSyntaxError('syntax error at or near "SELEC"'),
        asyncpg.DataError("invalid input for query argument $1"),
        asyncpg.ClientConfigurationError("invalid connection option"),
        ValueError("not a store"),
        KeyError("id"),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_defects_are_not_store_outages(exc: Exception) -> None:
    assert not is_store_outage(exc)


def test_an_outage_is_found_among_the_causes() -> None:
    try:
        try:
            raise asyncpg.CannotConnectNowError("the database system is starting up")
        except asyncpg.PostgresError as inner:
            raise RuntimeError("while loading the day") from inner
    except RuntimeError as outer:
        assert is_store_outage(outer)


def test_a_class_08_sqlstate_alone_is_an_outage() -> None:
    """SQLAlchemy's adaptation of an asyncpg error keeps the SQLSTATE as an attribute."""
    from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_dbapi

    orig = AsyncAdapt_asyncpg_dbapi.Error("server closed the connection unexpectedly")
    orig.sqlstate = "08006"  # type: ignore[attr-defined]
    assert is_store_outage(sa_exc.DBAPIError("SELECT 1", {}, orig))
    orig.sqlstate = "42P01"  # type: ignore[attr-defined]
    assert not is_store_outage(sa_exc.DBAPIError("SELECT 1", {}, orig))


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
