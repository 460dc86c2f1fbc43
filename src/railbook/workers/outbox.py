"""The outbox relay and the notifications consumer.

Events are written to ``outbox`` in the same transaction as the state change they describe. The
relay publishes unpublished rows in id order — to the Redis stream ``railbook:events`` in the
distributed mode, to an in-process queue when embedded — and stamps ``published_at`` in the same
transaction that selected them.

Invariant (several relays at once): a relay selects its batch ``FOR UPDATE SKIP LOCKED``, so no
two relays ever hold the same row, and a row is stamped in the transaction that published it; a
row is published again only if that commit fails after the publish (at-least-once), which the
consumers absorb by recording every event id in ``processed_event`` before acting on it.
SQLite ignores the clause; the write transaction itself serialises relays there.

On PostgreSQL each statement here has one SQL text whatever the batch size (the ids travel as one
array parameter), so a connection prepares it once and reuses it; SQLite keeps an expanding IN list
and an executemany.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import socket
from collections import Counter
from collections.abc import Mapping, Sequence
from itertools import chain
from typing import Any, cast

import structlog
from sqlalchemy import BigInteger, Table, Text, any_, bindparam, delete, select, text, tuple_, update
from sqlalchemy import cast as cast_
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import CursorResult

from railbook.adapters.db.models import Outbox, ProcessedEvent
from railbook.adapters.redis.autopipe import AutoPipeline, raise_errors
from railbook.api.errors import is_store_outage
from railbook.bootstrap import Container
from railbook.kit.clock import utcnow

log = structlog.get_logger(__name__)

STREAM = "railbook:events"
STREAM_MAXLEN = 100_000
NOTIFICATIONS = "notifications"
RELAY_BATCH = 1000
# After a partial batch, the relay and the consumer wait this long before the next one: in a sale
# events come by the thousand a second, and a cycle (transaction, stream round trips) per handful
# of them costs more than the events themselves. Events reach consumers at most this much later.
LINGER_S = 0.2
IDLE_S = 0.1
IDLE_MAX_S = 2.0
BLOCK_MS = 1000  # below the Redis client's socket timeout
CLAIM_EVERY_S = 30.0
CLAIM_IDLE_MS = 60_000

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


# Retention: rows deleted per table per statement, and how often a process prunes.
PRUNE_BATCH = 5000
PRUNE_EVERY_S = 60.0


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


async def prune_events(container: Container, *, force: bool = False) -> dict[str, int] | None:
    """Delete published outbox events and processed-event records older than the retention
    (``EVENT_RETENTION_DAYS``), at most once a minute per process (None when it was not time) and at
    most PRUNE_BATCH rows of each per call. An unpublished event is never deleted, however old: the
    relay still owes it. Safe in several processes (a row is deleted once, by whichever comes first).
    The retention must exceed any redelivery: consumers recognise an event by its record only while
    it is kept (the relay never publishes a stamped event again)."""
    loop = asyncio.get_running_loop()
    due = container.events_prune_due
    if not force and loop.time() < due:
        return None
    container.events_prune_due = loop.time() + PRUNE_EVERY_S
    cutoff = utcnow() - dt.timedelta(days=container.settings.event_retention_days)
    events, records = _prune_statements(PRUNE_BATCH)
    async with container.sessionmaker() as session, session.begin():
        gone_events = cast(CursorResult[Any], await session.execute(events, {"cutoff": cutoff})).rowcount
        gone_records = cast(CursorResult[Any], await session.execute(records, {"cutoff": cutoff})).rowcount
    if gone_events or gone_records:
        log.info("events_pruned", outbox=gone_events, processed=gone_records)
    return {"outbox": int(gone_events or 0), "processed": int(gone_records or 0)}


def _event_fields(row: Any) -> dict[str, str]:
    return {
        "id": str(row.id),
        "topic": row.topic,
        "key": row.key,
        "payload": row.payload,  # the stored JSON text, published as it is
    }


async def _publish(container: Container, events: Sequence[dict[str, str]]) -> None:
    if container.redis is None:
        queue = container.event_queue
        for event in events:
            queue.put_nowait(event)
        return
    head = ("XADD", STREAM, "MAXLEN", "~", STREAM_MAXLEN, "*")
    commands = [(*head, *chain.from_iterable(event.items())) for event in events]
    raise_errors(await autopipe(container).execute(commands))


def autopipe(container: Container) -> AutoPipeline:
    """The process's shared Redis batches (built with the container in distributed mode)."""
    assert container.autopipe is not None, "distributed mode: the container has an auto-pipeline"
    return container.autopipe


async def relay_once(container: Container, *, batch: int = RELAY_BATCH) -> int:
    """Publish one batch of unpublished outbox rows; returns how many."""
    stamp = _STAMP_PG if container.engine.dialect.name == "postgresql" else _STAMP_SQLITE
    async with container.sessionmaker() as session, session.begin():
        rows = (await session.execute(_NEXT_BATCH, {"batch": batch})).all()
        if not rows:
            return 0
        await _publish(container, [_event_fields(r) for r in rows])
        await session.execute(stamp, {"ids": [r.id for r in rows], "stamped_at": utcnow()})
    return len(rows)


async def handle_events(container: Container, consumer: str, events: Sequence[Mapping[str, str]]) -> int:
    """Process a batch of events once per consumer (one INSERT … ON CONFLICT DO NOTHING RETURNING tells
    the new ones from redeliveries); returns how many were new."""
    if not events:
        return 0
    now = utcnow()
    ids = [str(e["id"]) for e in events]
    async with container.sessionmaker() as session, session.begin():
        if container.engine.dialect.name == "postgresql":
            params = {"consumer": consumer, "event_ids": ids, "processed_at": now}
            fresh = set((await session.execute(_RECORD_PG, params)).scalars())
        else:
            rows = [{"consumer": consumer, "event_id": i, "processed_at": now} for i in ids]
            fresh = set((await session.execute(_RECORD_SQLITE, rows)).scalars())
    new = len(fresh)
    handled = []
    for event_id, event in zip(ids, events, strict=True):
        if event_id in fresh:
            fresh.discard(event_id)  # a batch may carry one event twice
            handled.append(event)
    # One line per batch: a flash sale issues thousands of tickets a second, and a line each cost the
    # committer's process ~17 µs per order. Each event's own line at debug level.
    if handled:
        topics = Counter(e.get("topic") for e in handled)
        log.info("notifications", consumer=consumer, n=new, topics=dict(topics))
    if log.is_enabled_for(logging.DEBUG):
        for event in handled:
            log.debug(
                "notification",
                consumer=consumer,
                event_id=event["id"],
                topic=event.get("topic"),
                key=event.get("key"),
                member_id=json.loads(event.get("payload") or "{}").get("member_id"),
            )
    return new


async def handle_event(container: Container, consumer: str, event: Mapping[str, str]) -> bool:
    """Process one event once per consumer: False when it had been processed before."""
    return await handle_events(container, consumer, [event]) == 1


def _decode(fields: Mapping[Any, Any]) -> dict[str, str]:
    return {
        (k.decode() if isinstance(k, bytes) else str(k)): (v.decode() if isinstance(v, bytes) else str(v))
        for k, v in fields.items()
    }


async def consume_once(container: Container, *, consumer_name: str, block_ms: int = BLOCK_MS) -> int:
    """Read and handle one batch of events as the ``notifications`` group; acknowledge after handling."""
    if container.redis is None:
        queue = container.event_queue
        try:
            event = await asyncio.wait_for(queue.get(), timeout=block_ms / 1000)
        except TimeoutError:
            return 0
        events = [event]
        while not queue.empty() and len(events) < RELAY_BATCH:
            events.append(queue.get_nowait())
        await handle_events(container, NOTIFICATIONS, events)
        return len(events)
    redis = container.redis
    answer = await redis.xreadgroup(
        NOTIFICATIONS, consumer_name, {STREAM: ">"}, count=RELAY_BATCH, block=block_ms
    )
    handled = 0
    for _stream, entries in answer or []:
        if not entries:
            continue
        await handle_events(container, NOTIFICATIONS, [_decode(fields) for _entry_id, fields in entries])
        await redis.xack(STREAM, NOTIFICATIONS, *[entry_id for entry_id, _fields in entries])
        handled += len(entries)
    return handled


async def claim_stale(container: Container, *, consumer_name: str, min_idle_ms: int = CLAIM_IDLE_MS) -> int:
    """Take over events a dead consumer read but never acknowledged (XAUTOCLAIM), and handle them."""
    if container.redis is None:
        return 0
    answer = await container.redis.xautoclaim(
        STREAM, NOTIFICATIONS, consumer_name, min_idle_time=min_idle_ms, start_id="0-0", count=RELAY_BATCH
    )
    entries = [(i, f) for i, f in (answer[1] if answer and len(answer) > 1 else []) if f]
    if not entries:
        return 0
    await handle_events(container, NOTIFICATIONS, [_decode(f) for _i, f in entries])
    await container.redis.xack(STREAM, NOTIFICATIONS, *[i for i, _f in entries])
    return len(entries)


async def ensure_group(container: Container) -> None:
    if container.redis is None:
        return
    from redis.exceptions import ResponseError

    try:
        await container.redis.xgroup_create(STREAM, NOTIFICATIONS, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


async def _relay_loop(container: Container) -> None:
    # A full batch is followed at once, a partial one after LINGER_S; an idle outbox is polled less
    # and less often (up to IDLE_MAX_S), since each empty poll is a transaction with a locking read.
    idle = IDLE_S
    while True:
        try:
            sent = await relay_once(container)
            if sent == 0:
                await asyncio.sleep(idle)
                idle = min(idle * 2, IDLE_MAX_S)
            else:
                idle = IDLE_S
                if sent < RELAY_BATCH:
                    await asyncio.sleep(LINGER_S)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not is_store_outage(exc):
                raise
            log.warning("outbox_relay_store_unavailable", error=repr(exc)[:200])
            await asyncio.sleep(1.0)


def _group_lost(exc: Exception) -> bool:
    """The stream or its group vanished (Redis data lost or flushed): recreate them and go on."""
    text = str(exc)
    return "NOGROUP" in text or "UNBLOCKED" in text


async def _consumer_loop(container: Container, name: str) -> None:
    await ensure_group(container)
    next_claim = 0.0
    loop = asyncio.get_running_loop()
    while True:
        try:
            if loop.time() >= next_claim:
                next_claim = loop.time() + CLAIM_EVERY_S
                await claim_stale(container, consumer_name=name)
            if 0 < await consume_once(container, consumer_name=name) < RELAY_BATCH:
                await asyncio.sleep(LINGER_S)  # a partial batch: let the next one gather
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if _group_lost(exc):
                log.warning("event_group_recreated", error=repr(exc)[:200])
                await ensure_group(container)
                continue
            if not is_store_outage(exc):
                raise
            log.warning("event_consumer_store_unavailable", error=repr(exc)[:200])
            await asyncio.sleep(1.0)


async def run_relay(container: Container) -> None:
    """Run the relay and the notifications consumer of this process until cancelled."""
    name = f"{socket.gethostname()}-{os.getpid()}"
    tasks = [
        asyncio.create_task(_relay_loop(container), name="outbox_relay"),
        asyncio.create_task(_consumer_loop(container, name), name="notifications"),
    ]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
