"""The outbox relay and the notifications consumer.

Events are written to ``outbox`` in the same transaction as the state change they describe. The
relay publishes unpublished rows in id order — to the Redis stream ``railbook:events`` in the
distributed mode, to an in-process queue when embedded — and stamps them published in the same
transaction that selected them (``adapters.db.outbox`` states the invariant that makes several
relays safe). Consumers record every event id before acting on it, so a redelivery is absorbed.
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

import structlog

from railbook.adapters.outage import is_store_outage
from railbook.adapters.redis.events import group_lost
from railbook.bootstrap import Container
from railbook.kit.clock import utcnow

log = structlog.get_logger(__name__)

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

# Retention: rows deleted per table per statement, and how often a process prunes.
PRUNE_BATCH = 5000
PRUNE_EVERY_S = 60.0


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
    gone_events, gone_records = await container.outbox.prune(cutoff, PRUNE_BATCH)
    if gone_events or gone_records:
        log.info("events_pruned", outbox=gone_events, processed=gone_records)
    return {"outbox": gone_events, "processed": gone_records}


async def _publish(container: Container, events: Sequence[dict[str, str]]) -> None:
    if container.event_stream is None:
        queue = container.event_queue
        for event in events:
            queue.put_nowait(event)
        return
    await container.event_stream.publish(events)


async def relay_once(container: Container, *, batch: int = RELAY_BATCH) -> int:
    """Publish one batch of unpublished outbox rows; returns how many."""
    async with container.outbox.transaction() as tx:
        events = await tx.take(batch)
        if not events:
            return 0
        await _publish(container, events)
        await tx.mark_published(utcnow())
    return len(events)


async def handle_events(container: Container, consumer: str, events: Sequence[Mapping[str, str]]) -> int:
    """Process a batch of events once per consumer (one INSERT … ON CONFLICT DO NOTHING RETURNING tells
    the new ones from redeliveries); returns how many were new."""
    if not events:
        return 0
    ids = [str(e["id"]) for e in events]
    fresh = await container.outbox.record_processed(consumer, ids, utcnow())
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


async def consume_once(container: Container, *, consumer_name: str, block_ms: int = BLOCK_MS) -> int:
    """Read and handle one batch of events as the ``notifications`` group; acknowledge after handling."""
    stream = container.event_stream
    if stream is None:
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
    entries = await stream.read(NOTIFICATIONS, consumer_name, count=RELAY_BATCH, block_ms=block_ms)
    if not entries:
        return 0
    await handle_events(container, NOTIFICATIONS, [fields for _entry_id, fields in entries])
    await stream.ack(NOTIFICATIONS, [entry_id for entry_id, _fields in entries])
    return len(entries)


async def claim_stale(container: Container, *, consumer_name: str, min_idle_ms: int = CLAIM_IDLE_MS) -> int:
    """Take over events a dead consumer read but never acknowledged (XAUTOCLAIM), and handle them."""
    stream = container.event_stream
    if stream is None:
        return 0
    entries = await stream.claim_stale(
        NOTIFICATIONS, consumer_name, min_idle_ms=min_idle_ms, count=RELAY_BATCH
    )
    if not entries:
        return 0
    await handle_events(container, NOTIFICATIONS, [fields for _entry_id, fields in entries])
    await stream.ack(NOTIFICATIONS, [entry_id for entry_id, _fields in entries])
    return len(entries)


async def ensure_group(container: Container) -> None:
    """Create the notifications group (and the stream) if missing; nothing to do when embedded."""
    if container.event_stream is not None:
        await container.event_stream.ensure_group(NOTIFICATIONS)


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
            if group_lost(exc):
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
