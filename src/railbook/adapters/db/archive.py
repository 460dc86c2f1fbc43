"""Archiving past service dates on PostgreSQL: each date's partitions detached, exported to CSV
files and dropped, with the rows of the plain per-day tables that belong to the date.

A date goes in three steps, each safe to repeat after a crash:

1. ``detach`` (one short transaction): the date's partitions are made if its rows still sit in the
   DEFAULT partitions, detached (an ACCESS EXCLUSIVE lock on each parent, taken under
   ``lock_timeout`` and held for milliseconds), and checked once detached: nothing can reach them
   any more, so what the check passes stays true.
2. ``export``: every table's rows of the date are copied (``COPY … TO STDOUT``, CSV with a header)
   to ``<dir>/<date>/<table>.csv`` through a temporary name, flushed to disk, then renamed.
3. ``drop`` (one transaction): the detached tables are dropped and the date's rows of ``payment``,
   ``ticket_change``, ``daily_pair_inventory``, ``daily_train_stop`` and ``daily_train`` deleted.

A date whose partitions are detached but not dropped is found again by the next run (tables named
``<table>_pYYYYMMDD`` that are no partition of anything) and finished from step 2.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from railbook.adapters.db.partitions import LOCK_TIMEOUT, PARTITIONED, partition_name
from railbook.services.sales.ports import ArchiveRefused

# Dates with records before a cut-off: any table of a date (attached or left detached), and train-days
# whose records are still in the DEFAULT partitions.
_DATES = text(
    r"""
    SELECT to_date(substring(relname FROM '_p(\d{8})$'), 'YYYYMMDD') AS d FROM pg_class
    WHERE relkind = 'r' AND relname ~ '^(order|ticket|daily_seat)_p\d{8}$'
    UNION SELECT service_date FROM daily_train
    UNION SELECT service_date FROM order_default
    """
)
# A table's own foreign keys (those under them, one per referenced partition, go with them).
_KEYS = text(
    "SELECT conname FROM pg_constraint WHERE conrelid = to_regclass(:name) AND contype = 'f' "
    "AND conparentid = 0"
)
_ATTACHED = text("SELECT EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = to_regclass(:name))")
# Why a date cannot be archived yet. Each reads only the date's records (``{order}``, ``{ticket}``
# are its partitions); ``:d`` the date, ``:today`` today in Beijing.
_REFUSALS = (
    (
        "a train of the day is still on its way or on sale (its last stop is on {1})",
        "SELECT d.train_code, (d.service_date + max(s.day))::text FROM daily_train d "
        "JOIN daily_train_stop s ON s.daily_train_id = d.id WHERE d.service_date = :d "
        "GROUP BY d.id HAVING d.service_date + max(s.day) >= :today",
    ),
    (
        "order {0} is not final ({1}): let the workers finish it first",
        "SELECT id, status || coalesce('/' || payment_status, '') FROM {order} WHERE "
        "status IN ('INIT', 'PENDING') OR (status = 'SUCCESS' AND payment_status = 'UNPAID') "
        "OR (status = 'CANCEL' AND released_at IS NULL)",
    ),
    (
        "ticket {0} is {1} and its seat is not confirmed back yet",
        "SELECT id, status FROM {ticket} WHERE status IN ('REFUNDED', 'CHANGED') AND released_at IS NULL",
    ),
    (
        "a change of ticket {0} to order {1} is still pending",
        "SELECT c.ticket_id, c.new_order_id FROM ticket_change c WHERE c.status = 'PENDING' AND "
        "(c.ticket_id IN (SELECT id FROM {ticket}) OR c.new_order_id IN (SELECT id FROM {order}))",
    ),
    (
        "waitlist entry {0} of train {1} still waits",
        "SELECT id::text, train_code FROM waitlist WHERE service_date = :d "
        "AND status IN ('WAITING', 'FILLING')",
    ),
    (
        "event {0} of order {1} is not published yet",
        "SELECT e.id::text, e.key FROM outbox e WHERE e.published_at IS NULL "
        "AND e.key IN (SELECT id FROM {order})",
    ),
)
# What a date's archive holds beside its three partitions, and how its rows are found.
_PLAIN_ROWS = {
    "payment": "FROM payment WHERE order_id IN (SELECT id FROM {order})",
    "ticket_change": "FROM ticket_change WHERE ticket_id IN (SELECT id FROM {ticket}) "
    "OR new_order_id IN (SELECT id FROM {order})",
    "daily_pair_inventory": "FROM daily_pair_inventory WHERE daily_train_id IN "
    "(SELECT id FROM daily_train WHERE service_date = :d)",
    "daily_train_stop": "FROM daily_train_stop WHERE service_date = :d",
    "daily_train": "FROM daily_train WHERE service_date = :d",
}


def _names(date: dt.date) -> dict[str, str]:
    """The date's partition of each partitioned table, quoted for SQL, keyed by table."""
    return {table: f'"{partition_name(table, date)}"' for table in PARTITIONED}


class PgDayArchive:
    """The ``DayArchive`` of a PostgreSQL system of record."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def dates(self, before: dt.date) -> list[dt.date]:
        """Dates before ``before`` with records left, oldest first."""
        async with self._engine.connect() as conn:
            return sorted(d for d in (await conn.execute(_DATES)).scalars() if d < before)

    async def refusals(self, date: dt.date, today: dt.date) -> list[str]:
        """Why ``date`` cannot be archived yet, read from the parents (empty: it can be)."""
        day = {
            "order": '(SELECT * FROM "order" WHERE service_date = :d) AS o',
            "ticket": "(SELECT * FROM ticket WHERE service_date = :d) AS t",
        }
        async with self._engine.connect() as conn:
            return await _refusals(conn, date, today, day)

    async def detach(self, date: dt.date, today: dt.date) -> None:
        """Make the date's partitions if its rows are in the DEFAULT ones, detach them, and check
        them; raises ``ArchiveRefused`` (and detaches nothing) when a refusal shows."""
        names = _names(date)
        async with self._engine.begin() as conn:
            await conn.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
            await conn.execute(text("SELECT railbook_day_partitions(:d)"), {"d": date})
            for table in ("ticket", "order", "daily_seat"):  # tickets first: they name orders and seats
                if await conn.scalar(_ATTACHED, {"name": names[table]}):
                    parent = '"order"' if table == "order" else table
                    await conn.execute(text(f"ALTER TABLE {parent} DETACH PARTITION {names[table]}"))
                # A detached table keeps its foreign keys; those to the parents would stop the next
                # detach (its rows still name the orders and seats leaving with it).
                for key in (await conn.execute(_KEYS, {"name": names[table]})).scalars():
                    await conn.execute(text(f'ALTER TABLE {names[table]} DROP CONSTRAINT IF EXISTS "{key}"'))
            refused = await _refusals(conn, date, today, names)
            if refused:
                raise ArchiveRefused(refused)  # rolled back: the partitions stay attached

    async def export(self, date: dt.date, out: Path) -> dict[str, int]:
        """Copy the date's rows of every table to ``out/<date>/<table>.csv``; rows per table."""
        names = _names(date)
        folder = out / date.isoformat()
        folder.mkdir(parents=True, exist_ok=True)
        counts: dict[str, int] = {}
        async with self._engine.connect() as conn:
            raw: Any = (await conn.get_raw_connection()).driver_connection
            for table in PARTITIONED:
                name = partition_name(table, date)
                counts[table] = await _copy(folder / f"{table}.csv", raw.copy_from_table, name)
            for table, rows in _PLAIN_ROWS.items():
                query = f"SELECT * {rows.format(**names)}".replace(":d", f"'{date.isoformat()}'::date")
                counts[table] = await _copy(folder / f"{table}.csv", raw.copy_from_query, query)
        return counts

    async def drop(self, date: dt.date) -> None:
        """Drop the date's detached tables and delete its rows of the plain per-day tables."""
        names = _names(date)
        async with self._engine.begin() as conn:
            await conn.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
            for table in ("payment", "ticket_change"):
                await conn.execute(text(f"DELETE {_PLAIN_ROWS[table].format(**names)}"))
            await conn.execute(text(f"DROP TABLE {names['ticket']}, {names['order']}, {names['daily_seat']}"))
            for table in ("daily_pair_inventory", "daily_train_stop", "daily_train"):
                await conn.execute(text(f"DELETE {_PLAIN_ROWS[table]}"), {"d": date})


async def _refusals(conn: AsyncConnection, date: dt.date, today: dt.date, names: dict[str, str]) -> list[str]:
    """The refusals of ``date`` whose orders and tickets are in ``names`` (tables or subqueries)."""
    found: list[str] = []
    for message, query in _REFUSALS:
        rows = (await conn.execute(text(query.format(**names)), {"d": date, "today": today})).all()
        found.extend(f"{date.isoformat()}: {message.format(*row)}" for row in rows[:5])
        if len(rows) > 5:
            found.append(f"{date.isoformat()}: … and {len(rows) - 5} more like it")
    return found


async def _copy(path: Path, copy: Any, source: str) -> int:
    """COPY ``source`` (a table, or a query) to ``path`` as CSV with a header, through a temporary
    name flushed to disk before the rename: a file of that name is always whole. Returns its rows."""
    part = path.with_suffix(".csv.part")
    status = await copy(source, output=str(part), format="csv", header=True)  # asyncpg writes in a thread
    await asyncio.to_thread(_sync_and_rename, part, path)
    return int(str(status).rsplit(" ", 1)[-1])


def _sync_and_rename(part: Path, path: Path) -> None:
    with part.open("rb") as f:
        os.fsync(f.fileno())
    part.replace(path)
