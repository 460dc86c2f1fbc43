"""Which failures mean a store (PostgreSQL, SQLite, Redis) is unreachable or restarting: a caller
answers 503 or waits and retries. Decided by the exception's type, its SQLSTATE or its SQLite result
code, never by its message: a missing relation, a syntax error or any other programming error is a
defect, and retrying it would only repeat it forever."""

from __future__ import annotations

import sqlite3

import asyncpg
import sqlalchemy.exc as sa_exc
from redis import exceptions as redis_exc

# Redis: connection failures (a restart, a refused or reset socket, a pool with no free connection),
# a server still loading its data set (BusyLoadingError, a ConnectionError), and the replies a cluster
# or a replica gives while it fails over: TRYAGAIN, CLUSTERDOWN and MASTERDOWN, READONLY from a master
# demoted under a client still connected to it; a slot no known node serves, redirections that never
# settle (ClusterError). redis-py's parser gives each reply type its own class.
REDIS_OUTAGES = (
    redis_exc.ConnectionError,
    redis_exc.TimeoutError,
    redis_exc.TryAgainError,
    redis_exc.ClusterError,  # ClusterDownError, MasterDownError
    redis_exc.ReadOnlyError,
    redis_exc.SlotNotCoveredError,
)
# Redis ConnectionErrors that speak of the caller's credentials, not of the server's state.
REDIS_CALLER_ERRORS = (redis_exc.AuthenticationError, redis_exc.AuthorizationError)

# asyncpg: the connection is gone or refused, or the server is shutting down, crashed, starting up, or
# out of connection slots.
ASYNCPG_OUTAGES = (
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08, ConnectionDoesNotExistError among them
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
    asyncpg.InterfaceError,  # the connection or the pool is closed, or in use elsewhere
    asyncpg.QueryCanceledError,  # 57014: cancelled by a shutting-down server, or a statement timeout
)
# asyncpg's InterfaceErrors that speak of the caller, not of the connection: a setting or a feature.
ASYNCPG_CALLER_ERRORS = (
    asyncpg.ClientConfigurationError,
    asyncpg.UnsupportedClientFeatureError,
    asyncpg.UnsupportedServerFeatureError,
)
# The same by SQLSTATE, for errors that carry only the code (SQLAlchemy's DBAPI adaptation).
POSTGRES_OUTAGE_STATES = frozenset({"57014", "57P01", "57P02", "57P03", "53300"})

# SQLite: another connection holds the lock past the busy timeout (SQLITE_BUSY, "database is locked")
# or a table lock (SQLITE_LOCKED). The primary code is the low byte of an extended one.
SQLITE_OUTAGE_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})

# OSErrors of local files: a missing or unreadable file is a defect or a setting, not a store outage.
LOCAL_FILE_ERRORS = (
    FileNotFoundError,
    FileExistsError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
)


def _is_outage(exc: BaseException) -> bool:
    """This one exception, without its causes."""
    if isinstance(exc, (*ASYNCPG_CALLER_ERRORS, *REDIS_CALLER_ERRORS)):
        return False
    if isinstance(exc, (*REDIS_OUTAGES, *ASYNCPG_OUTAGES)):
        return True
    if isinstance(exc, redis_exc.ResponseError):
        return False  # any other error reply: the command's own (WRONGTYPE, NOSCRIPT, ERR ...)
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        return code is not None and code & 0xFF in SQLITE_OUTAGE_CODES
    # A pool that hands out no connection in time; a connection found closed by the server at checkout;
    # a statement whose connection SQLAlchemy found dead.
    if isinstance(exc, (sa_exc.TimeoutError, sa_exc.DisconnectionError)):
        return True
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(sqlstate, str) and (sqlstate.startswith("08") or sqlstate in POSTGRES_OUTAGE_STATES):
        return True
    # The network below the drivers: refused, reset, unreachable, timed out (not the file system's).
    return isinstance(exc, OSError) and not isinstance(exc, LOCAL_FILE_ERRORS)


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
        if isinstance(current, BaseExceptionGroup) and all(map(is_store_outage, current.exceptions)):
            return True  # concurrent calls that all met the outage (a group is never empty)
        seen.add(id(current))
        behind = (
            current.__cause__ or current.__context__,
            current.orig if isinstance(current, sa_exc.StatementError) else None,
        )
        pending += [e for e in behind if isinstance(e, BaseException)]
    return False
