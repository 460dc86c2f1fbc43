"""Store outages are told by the error's type (or SQLSTATE, SQLite result code, Redis reply type),
never by its message: each error a restarting PostgreSQL or Redis raises, constructed as its driver
raises it, is an outage (503 + Retry-After; workers wait and retry); a defect is not."""

from __future__ import annotations

import sqlite3

import asyncpg
import pytest
import sqlalchemy.exc as sa_exc
from redis import exceptions as redis_exc
from redis._parsers.base import BaseParser
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_dbapi

from railbook.adapters.outage import is_store_outage


def _redis_reply(reply: str) -> Exception:
    """The exception redis-py raises for this error reply (its own parser picks the class)."""
    return BaseParser.parse_error(reply)


def _wrapped(orig: Exception, *, invalidated: bool = False) -> sa_exc.DBAPIError:
    """An asyncpg error as SQLAlchemy raises it: adapted to the DB-API (cause: the asyncpg error,
    SQLSTATE copied), then wrapped in a DBAPIError."""
    adapted = AsyncAdapt_asyncpg_dbapi.Error(f"{type(orig)}: {orig}")
    adapted.sqlstate = getattr(orig, "sqlstate", None)  # type: ignore[attr-defined]
    adapted.__cause__ = orig
    return sa_exc.DBAPIError("SELECT 1", {}, adapted, connection_invalidated=invalidated)


def _sqlite_error(code: int) -> sqlite3.OperationalError:
    error = sqlite3.OperationalError("database is locked")
    error.sqlite_errorcode = code  # type: ignore[attr-defined]
    return error


POSTGRES_RESTARTING = [
    asyncpg.CannotConnectNowError("the database system is starting up"),
    asyncpg.CannotConnectNowError("the database system is shutting down"),
    asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    asyncpg.InterfaceError("connection is closed"),
    asyncpg.InterfaceError("pool is closed"),
    asyncpg.exceptions.ConnectionFailureError("could not send data"),
    asyncpg.PostgresConnectionError("connection failure"),
    asyncpg.AdminShutdownError("terminating connection due to administrator command"),
    asyncpg.CrashShutdownError("terminating connection because of crash of another server process"),
    asyncpg.QueryCanceledError("canceling statement due to user request"),
    asyncpg.TooManyConnectionsError("sorry, too many clients already"),
    ConnectionRefusedError(111, "Connection refused"),
    ConnectionResetError(104, "Connection reset by peer"),
    BrokenPipeError(32, "Broken pipe"),
    OSError(113, "No route to host"),
    OSError("Multiple exceptions: [Errno 111] Connect call failed ('127.0.0.1', 5432)"),
    TimeoutError(),
    sa_exc.TimeoutError("QueuePool limit of size 10 overflow 10 reached, connection timed out"),
    sa_exc.DisconnectionError("connection closed by the server"),
    _wrapped(asyncpg.AdminShutdownError("terminating connection due to administrator command")),
    _wrapped(asyncpg.ConnectionDoesNotExistError("connection was closed"), invalidated=True),
    _wrapped(asyncpg.CannotConnectNowError("the database system is starting up")),
    _wrapped(asyncpg.InterfaceError("connection is closed")),
]

REDIS_RESTARTING = [
    redis_exc.ConnectionError("Error 111 connecting to 127.0.0.1:6390. Connection refused."),
    redis_exc.MaxConnectionsError("Too many connections"),
    redis_exc.TimeoutError("Timeout reading from socket"),
    redis_exc.BusyLoadingError("Redis is loading the dataset in memory"),
    _redis_reply("LOADING Redis is loading the dataset in memory"),
    redis_exc.ReadOnlyError("You can't write against a read only replica."),
    _redis_reply("READONLY You can't write against a read only replica."),
    redis_exc.MasterDownError("Link with MASTER is down"),
    _redis_reply("MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'."),
    redis_exc.TryAgainError("Multiple keys request during rehashing of slot"),
    _redis_reply("TRYAGAIN Multiple keys request during rehashing of slot"),
    redis_exc.ClusterDownError("The cluster is down"),
    _redis_reply("CLUSTERDOWN The cluster is down"),
    redis_exc.ClusterError("TTL exhausted."),
    redis_exc.SlotNotCoveredError("Command # 1 (GET k) of pipeline caused error: slot not covered"),
]

SQLITE_BUSY = [_sqlite_error(sqlite3.SQLITE_BUSY), _sqlite_error(sqlite3.SQLITE_LOCKED)]


@pytest.mark.parametrize(
    "exc", POSTGRES_RESTARTING + REDIS_RESTARTING + SQLITE_BUSY, ids=lambda exc: type(exc).__name__
)
def test_store_outages_are_told_by_their_type(exc: Exception) -> None:
    assert is_store_outage(exc)


@pytest.mark.parametrize(
    "exc",
    [
        _redis_reply("NOSCRIPT No matching script. Please use EVAL."),
        _redis_reply("WRONGTYPE Operation against a key holding the wrong kind of value"),
        _redis_reply("ERR wrong number of arguments for 'get' command"),
        # With no CLIENT SETINFO in the handshake (``bootstrap.make_redis``) its refusal never reaches
        # a command: met anyway, it is a defect, not a restart.
        _redis_reply("ERR unknown subcommand 'SETINFO'. Try CLIENT HELP."),
        # A plain error reply is told by its type: the text alone says nothing.
        redis_exc.ResponseError("LOADING Redis is loading the dataset in memory"),
        redis_exc.AuthenticationError("invalid username-password pair"),
        redis_exc.DataError("Invalid input of type: 'NoneType'"),
        asyncpg.UndefinedTableError('relation "no_such_table" does not exist'),
        asyncpg.UndefinedColumnError('column "nope" does not exist'),
        asyncpg.UniqueViolationError("duplicate key value violates unique constraint"),
        asyncpg.PostgresSyntaxError('syntax error at or near "SELEC"'),
        asyncpg.DataError("invalid input for query argument $1"),
        asyncpg.ClientConfigurationError("invalid connection option"),
        asyncpg.CharacterNotInRepertoireError('invalid byte sequence for encoding "UTF8": 0x00'),
        _wrapped(asyncpg.UndefinedTableError('relation "no_such_table" does not exist')),
        sa_exc.InvalidRequestError("A transaction is already begun"),
        _sqlite_error(sqlite3.SQLITE_ERROR),
        FileNotFoundError(2, "No such file or directory"),
        PermissionError(13, "Permission denied"),
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


def test_a_group_is_an_outage_when_all_its_errors_are() -> None:
    refused = ConnectionRefusedError(111, "Connection refused")
    assert is_store_outage(ExceptionGroup("reads", [refused, redis_exc.TimeoutError("read")]))
    assert not is_store_outage(ExceptionGroup("reads", [refused, KeyError("id")]))


def test_a_class_08_sqlstate_alone_is_an_outage() -> None:
    """SQLAlchemy's adaptation of an asyncpg error keeps the SQLSTATE as an attribute."""
    orig = AsyncAdapt_asyncpg_dbapi.Error("server closed the connection unexpectedly")
    orig.sqlstate = "08006"  # type: ignore[attr-defined]
    assert is_store_outage(sa_exc.DBAPIError("SELECT 1", {}, orig))
    orig.sqlstate = "57P01"  # type: ignore[attr-defined]
    assert is_store_outage(sa_exc.DBAPIError("SELECT 1", {}, orig))
    orig.sqlstate = "42P01"  # type: ignore[attr-defined]
    assert not is_store_outage(sa_exc.DBAPIError("SELECT 1", {}, orig))
