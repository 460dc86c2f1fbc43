"""The outbox table and the processed-event records: the relay's batches, their stamps, each
consumer's record of what it handled, and the pruning of both past the retention.

Invariant (several relays at once): a relay selects its batch ``FOR UPDATE SKIP LOCKED``, so no two
relays ever hold the same row, and a row is stamped in the transaction that published it; a row is
published again only if that commit fails after the publish (at-least-once), which the consumers
absorb by recording every event id in ``processed_event`` before acting on it. SQLite ignores the
clause; the write transaction itself serialises relays there.

On PostgreSQL each statement here has one SQL text whatever the batch size (the ids travel as one
array parameter), so a connection prepares it once and reuses it; SQLite keeps an expanding IN list
and an executemany.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, cast

from sqlalchemy import BigInteger, Table, Text, any_, bindparam, delete, select, text, tuple_, update
from sqlalchemy import cast as cast_
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from railbook.adapters.db.models import Outbox, ProcessedEvent

_outbox = cast(Table, Outbox.__table__)
_processed = cast(Table, ProcessedEvent.__table__)

# Id order, spelt as the order of ``ix_outbox_unpublished`` (every selected row has a NULL
# ``published_at``): PostgreSQL then reads the batch straight off that index and stops at the limit.
# ``ORDER BY id`` alone cannot use that index's order: every batch would walk the published history
# by the primary key, or read and sort the whole backlog.
_NEXT_BATCH = (
    select(_outbox.c.id, _outbox.c.topic, _outbox.c.key, cast_(_outbox.c.payload, Text).label("payload"))
    .where(_outbox.c.published_at.is_(None))
    .order_by(_outbox.c.published_at, _outbox.c.id)
    .limit(bindparam("batch"))
    .with_for_update(skip_locked=True)
)
_STAMP_PG = (
    update(_outbox)
    .where(_outbox.c.id == any_(bindparam("ids", type_=ARRAY(BigInteger))))
    .values(published_at=bindparam("stamped_at"))
)
_STAMP_SQLITE = (
    update(_outbox)
    .where(_outbox.c.id.in_(bindparam("ids", expanding=True)))
    .values(published_at=bindparam("stamped_at"))
)
# A batch may carry one event twice (a redelivery beside its first delivery): ON CONFLICT DO
# NOTHING skips the second row as it skips a row recorded before, so RETURNING names each new id once.
_RECORD_PG = text(
    "INSERT INTO processed_event (consumer, event_id, processed_at)"
    " SELECT CAST(:consumer AS text), e, CAST(:processed_at AS timestamptz)"
    " FROM unnest(CAST(:event_ids AS text[])) AS e"
    " ON CONFLICT DO NOTHING RETURNING event_id"
)
# SQLite: an executemany of one statement (batched by insertmanyvalues).
_RECORD_SQLITE = sqlite_insert(_processed).on_conflict_do_nothing().returning(_processed.c.event_id)


def _prune_statements(batch: int) -> tuple[Any, Any]:
    """Published outbox rows and processed-event records older than ``:cutoff``, ``batch`` at a time
    (oldest first, off ``ix_outbox_unpublished`` and ``ix_processed_event_processed_at``)."""
    old_events = (
        select(_outbox.c.id)
        .where(_outbox.c.published_at < bindparam("cutoff"))
        .order_by(_outbox.c.published_at, _outbox.c.id)
        .limit(batch)
    )
    old_records = (
        select(_processed.c.consumer, _processed.c.event_id)
        .where(_processed.c.processed_at < bindparam("cutoff"))
        .limit(batch)
    )
    return (
        delete(_outbox).where(_outbox.c.id.in_(old_events.scalar_subquery())),
        delete(_processed).where(tuple_(_processed.c.consumer, _processed.c.event_id).in_(old_records)),
    )


class RelayBatch:
    """The relay's statements inside one transaction: take a batch, then stamp it once published."""

    def __init__(self, session: AsyncSession, stamp: Any) -> None:
        self._session = session
        self._stamp = stamp
        self._taken: list[int] = []

    async def take(self, limit: int) -> list[dict[str, str]]:
        """Up to ``limit`` unpublished events in id order, locked against other relays, as stream
        fields (id, topic, key, and the payload's stored JSON text as it is)."""
        rows = (await self._session.execute(_NEXT_BATCH, {"batch": limit})).all()
        self._taken += [r.id for r in rows]
        return [{"id": str(r.id), "topic": r.topic, "key": r.key, "payload": r.payload} for r in rows]

    async def mark_published(self, at: dt.datetime) -> None:
        """Stamp the events taken in this transaction as published at ``at``."""
        await self._session.execute(self._stamp, {"ids": self._taken, "stamped_at": at})


class OutboxStore:
    """The outbox and processed-event tables on PostgreSQL or SQLite."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], *, postgres: bool) -> None:
        self._sessionmaker = sessionmaker
        self._postgres = postgres
        self._stamp = _STAMP_PG if postgres else _STAMP_SQLITE

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[RelayBatch]:
        """One relay transaction: commits when the block ends normally, rolls back on an exception
        (the batch's locks are released and its rows stay unpublished)."""
        async with self._sessionmaker() as session, session.begin():
            yield RelayBatch(session, self._stamp)

    async def record_processed(self, consumer: str, event_ids: Sequence[str], at: dt.datetime) -> set[str]:
        """Record these events as processed by ``consumer`` in one statement; returns the ids that were
        not recorded before (a redelivery or a repeat within the batch is absent)."""
        async with self._sessionmaker() as session, session.begin():
            if self._postgres:
                params = {"consumer": consumer, "event_ids": list(event_ids), "processed_at": at}
                return set((await session.execute(_RECORD_PG, params)).scalars())
            rows = [{"consumer": consumer, "event_id": i, "processed_at": at} for i in event_ids]
            return set((await session.execute(_RECORD_SQLITE, rows)).scalars())

    async def prune(self, cutoff: dt.datetime, batch: int) -> tuple[int, int]:
        """Delete up to ``batch`` published events and ``batch`` processed-event records older than
        ``cutoff``, in one transaction; returns how many of each. Unpublished events are never deleted."""
        events, records = _prune_statements(batch)
        async with self._sessionmaker() as session, session.begin():
            gone_events = cast(CursorResult[Any], await session.execute(events, {"cutoff": cutoff})).rowcount
            gone_records = cast(
                CursorResult[Any], await session.execute(records, {"cutoff": cutoff})
            ).rowcount
        return int(gone_events or 0), int(gone_records or 0)
