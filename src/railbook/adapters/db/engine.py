"""Engine and session factory for PostgreSQL (asyncpg) and SQLite (aiosqlite)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine


def make_engine(url: str, *, pool_size: int = 10, echo: bool = False) -> AsyncEngine:
    """Build the engine. SQLite gets WAL, a busy timeout and ``BEGIN IMMEDIATE`` for every
    transaction, so concurrent writers queue instead of failing with "database is locked"."""
    if url.startswith("sqlite"):
        engine = create_async_engine(url, echo=echo, connect_args={"timeout": 30})

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we emit BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    engine = create_async_engine(
        url,
        echo=echo,
        # Twice ``pool_size`` connections kept, none beyond: an overflow connection is closed when it
        # is returned, so a crowd past the pool's size would connect (a server process forked, the
        # driver's set-up) and disconnect once per request.
        pool_size=2 * pool_size,
        max_overflow=0,
        pool_timeout=5,
        connect_args={"timeout": 5, "command_timeout": 30},
    )

    @event.listens_for(engine.sync_engine, "checkout")
    def _drop_closed(_dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        # A pooled connection the server closed (restart, terminate) is replaced at checkout. asyncpg
        # sees the close as soon as the event loop reads the socket's end, so this needs no round
        # trip, where ``pool_pre_ping`` sends three (BEGIN, a query, ROLLBACK) on every checkout. A
        # close not yet seen fails its statement as a store outage (503 / retried), and SQLAlchemy
        # then recycles the whole pool.
        if record.driver_connection.is_closed():
            raise DisconnectionError("connection closed by the server")

    return engine


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
