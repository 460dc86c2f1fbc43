"""The per-day partitions of the system of record on PostgreSQL (docs/partitions.md).

``order``, ``ticket`` and ``daily_seat`` are partitioned by service date, one partition per date
(``order_p20261205`` …) and a DEFAULT partition for any row of a date without one. Migration 0009
defines ``railbook_day_partitions(date)``, which makes a date's three partitions (the ticket one with
its exclusion constraint); the opening of a date calls it first, in a transaction of its own.
SQLite keeps plain tables: nothing here applies to it.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

PARTITIONED = ("order", "daily_seat", "ticket")
# A date's partitions are attached under a SHARE UPDATE EXCLUSIVE lock on each parent, which waits
# for nothing the order path holds; still, never queue the order path behind a long wait.
LOCK_TIMEOUT = "5s"


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
