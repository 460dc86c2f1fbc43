"""Which failures mean a store (PostgreSQL, SQLite, Redis) is unreachable or restarting: a caller
answers 503 or waits and retries. Decided by the exception's type, its SQLSTATE or its SQLite result
code, never by its message: a missing relation, a syntax error or any other programming error is a
defect, and retrying it would only repeat it forever."""

from __future__ import annotations

import sqlite3

import asyncpg
import sqlalchemy.exc as sa_exc
from redis import exceptions as redis_exc

# Redis: connection failures, a server still loading its data set, and the replies a cluster or a
# replica gives while it fails over. Each reply's first word is its error type in the protocol.
REDIS_OUTAGES = (
    redis_exc.ConnectionError,  # includes BusyLoadingError (LOADING) and MaxConnectionsError
    redis_exc.TimeoutError,
    redis_exc.TryAgainError,
    redis_exc.MasterDownError,
)
REDIS_TRANSIENT_REPLIES = frozenset({"LOADING", "MASTERDOWN", "TRYAGAIN"})
# The reply of a Redis older than 7.2 to redis-py's connect handshake (CLIENT SETINFO), which redis-py
# reads and drops; met by a command, it means the connection broke mid-handshake and was read out of
# step: the reconnect to a restarted Redis, not a defect of the command.
REDIS_HANDSHAKE_REPLY = "unknown subcommand 'SETINFO'"

# asyncpg: the connection is gone or refused, or the server is shutting down, crashed, starting up, or
# out of connection slots.
ASYNCPG_OUTAGES = (
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08, ConnectionDoesNotExistError among them
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
    asyncpg.InterfaceError,  # the connection or the pool is closed, or in use elsewhere
)
# asyncpg's InterfaceErrors that speak of the caller, not of the connection: a setting or a feature.
ASYNCPG_CALLER_ERRORS = (
    asyncpg.ClientConfigurationError,
    asyncpg.UnsupportedClientFeatureError,
    asyncpg.UnsupportedServerFeatureError,
)
# The same by SQLSTATE, for errors that carry only the code (SQLAlchemy's DBAPI adaptation).
POSTGRES_OUTAGE_STATES = frozenset({"57P01", "57P02", "57P03", "53300"})

# SQLite: another connection holds the lock past the busy timeout (SQLITE_BUSY, "database is locked")
# or a table lock (SQLITE_LOCKED). The primary code is the low byte of an extended one.
SQLITE_OUTAGE_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})


def _is_outage(exc: BaseException) -> bool:
    """This one exception, without its causes."""
    if isinstance(exc, ASYNCPG_CALLER_ERRORS):
        return False
    if isinstance(exc, (*REDIS_OUTAGES, *ASYNCPG_OUTAGES)):
        return True
    if isinstance(exc, redis_exc.ResponseError):
        reply = str(exc)
        return exc.status_code in REDIS_TRANSIENT_REPLIES or reply.startswith(
            (*REDIS_TRANSIENT_REPLIES, REDIS_HANDSHAKE_REPLY)
        )
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        return code is not None and code & 0xFF in SQLITE_OUTAGE_CODES
    # A pool that hands out no connection in time; a statement whose connection SQLAlchemy found dead.
    if isinstance(exc, sa_exc.TimeoutError):
        return True
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(sqlstate, str) and (sqlstate.startswith("08") or sqlstate in POSTGRES_OUTAGE_STATES):
        return True
    # The network below the drivers: refused, reset, unreachable, timed out.
    return isinstance(exc, OSError | ConnectionError | TimeoutError)


def is_store_outage(exc: BaseException) -> bool:
    """True for errors that mean PostgreSQL, SQLite or Redis is unreachable or restarting, judged on the
    error and on the errors behind it (its cause or context, and the driver error SQLAlchemy wraps)."""
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        if _is_outage(current):
            return True
        seen.add(id(current))
        behind = (
            current.__cause__ or current.__context__,
            current.orig if isinstance(current, sa_exc.StatementError) else None,
        )
        pending += [e for e in behind if isinstance(e, BaseException)]
    return False
