"""The per-day partitions of the system of record on PostgreSQL (docs/partitions.md).

``order``, ``ticket`` and ``daily_seat`` are partitioned by service date, one partition per date
(``order_p20261205`` …) and a DEFAULT partition for any row of a date without one. Migration 0009
defines ``railbook_day_partitions(date)``, which makes a date's three partitions (the ticket one with
its exclusion constraint); the opening of a date calls it first, in a transaction of its own.
SQLite keeps plain tables: nothing here applies to it.
"""

from __future__ import annotations

import asyncio
import datetime as dt

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

PARTITIONED = ("order", "daily_seat", "ticket")
# Attaching a partition takes a SHARE UPDATE EXCLUSIVE lock on its parent, which the order path's
# writes never wait for; but the ticket partition's foreign keys take SHARE ROW EXCLUSIVE on ``order``
# and ``daily_seat``, which waits for the open write transactions there (the committer's, a
# payment's: milliseconds each) and makes new writes wait behind it. So a short lock timeout, and
# a few tries: the order path is never held up for long, and a date still opens.
LOCK_TIMEOUT = "500ms"
TRIES = 6
LOCK_NOT_AVAILABLE = "55P03"


def partition_name(table: str, date: dt.date) -> str:
    """The partition of ``table`` holding ``date``."""
    return f"{table}_p{date:%Y%m%d}"


async def make_day_partitions(session: AsyncSession, date: dt.date) -> int:
    """Make the date's partitions that do not exist yet, in the session's transaction; returns how
    many were made (0 on SQLite)."""
    if session.bind.dialect.name != "postgresql":
        return 0
    await session.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
    made = await session.scalar(text("SELECT railbook_day_partitions(:d)"), {"d": date})
    return int(made or 0)


async def prepare_day(sessionmaker: async_sessionmaker[AsyncSession], date: dt.date) -> int:
    """``make_day_partitions`` in a transaction of its own, tried again (up to ``TRIES`` times, a
    little later each time) when a lock was not granted within ``LOCK_TIMEOUT``."""
    for attempt in range(1, TRIES + 1):
        try:
            async with sessionmaker() as session, session.begin():
                return await make_day_partitions(session, date)
        except DBAPIError as exc:
            if getattr(exc.orig, "sqlstate", None) != LOCK_NOT_AVAILABLE or attempt == TRIES:
                raise
            await asyncio.sleep(0.2 * attempt)
    raise AssertionError("unreachable")
