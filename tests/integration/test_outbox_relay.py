"""The outbox relay and the notifications consumer, batch by batch: against the real PostgreSQL and
Redis, and the embedded SQLite path beside them."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import event, func, insert, select, update

from railbook.adapters.db.models import Outbox, ProcessedEvent
from railbook.adapters.redis.events import STREAM
from railbook.bootstrap import Container
from railbook.config import Settings
from railbook.kit.clock import utcnow
from railbook.workers.outbox import (
    LINGER_S,
    _relay_loop,
    consume_once,
    handle_events,
    prune_events,
    relay_once,
)
from tests.support import JWT_SECRET, container_for


@pytest.fixture
async def pg_container(pg_url: str, redis_url: str) -> AsyncIterator[Container]:
    async with container_for(Settings(database_url=pg_url, redis_url=redis_url, jwt_secret=JWT_SECRET)) as c:
        yield c


@pytest.fixture
async def sqlite_container(sqlite_url: str) -> AsyncIterator[Container]:
    async with container_for(Settings(database_url=sqlite_url, jwt_secret=JWT_SECRET)) as c:
        yield c


def _statements(container: Container) -> list[str]:
    """Every SQL text the container's engine sends from now on."""
    sent: list[str] = []

    @event.listens_for(container.engine.sync_engine, "before_cursor_execute")
    def _record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        sent.append(statement)

    return sent


async def _write_events(container: Container, topic: str, count: int) -> list[int]:
    async with container.sessionmaker() as session, session.begin():
        rows = [{"topic": topic, "key": str(i), "payload": {"member_id": 100 + i}} for i in range(count)]
        return list((await session.execute(insert(Outbox).returning(Outbox.id), rows)).scalars())


async def _unpublished(container: Container, ids: list[int]) -> int:
    async with container.sessionmaker() as session:
        query = (
            select(func.count()).select_from(Outbox).where(Outbox.id.in_(ids), Outbox.published_at.is_(None))
        )
        return (await session.execute(query)).scalar_one()


async def _processed(container: Container, consumer: str) -> Counter[str]:
    async with container.sessionmaker() as session:
        query = select(ProcessedEvent.event_id).where(ProcessedEvent.consumer == consumer)
        return Counter((await session.execute(query)).scalars())


async def test_relay_batches_publish_each_row_once_and_stamp_it_with_one_statement_text(
    pg_container: Container,
) -> None:
    c = pg_container
    topic = f"test.{uuid.uuid4().hex[:8]}"
    ids = await _write_events(c, topic, 23)
    sent = _statements(c)
    for size in (1, 2, 3, 5, 7, 11, 200):  # batches of many sizes, whatever else is unpublished
        await relay_once(c, batch=size)
    while await relay_once(c, batch=13):
        pass
    assert await _unpublished(c, ids) == 0
    assert c.redis is not None
    published: Counter[int] = Counter()
    for _entry_id, fields in await c.redis.xrange(STREAM, min="-", max="+"):
        if fields[b"topic"].decode() == topic:
            published[int(fields[b"id"])] += 1
            assert json.loads(fields[b"payload"])["member_id"] >= 100
    assert published == Counter(dict.fromkeys(ids, 1))
    # Whatever the batch size, the stamp is one SQL text, prepared once per connection.
    stamps = {s for s in sent if s.lstrip().upper().startswith("UPDATE OUTBOX")}
    assert len(stamps) == 1


async def test_a_batch_with_a_redelivery_and_a_duplicate_counts_only_the_new_events(
    pg_container: Container,
) -> None:
    c = pg_container
    consumer = f"test-{uuid.uuid4().hex[:8]}"
    events = [
        {"id": f"{consumer}-{i}", "topic": "order.paid", "key": "k", "payload": json.dumps({"member_id": i})}
        for i in range(5)
    ]
    sent = _statements(c)
    assert await handle_events(c, consumer, events[:2]) == 2
    # events[1] was handled before; events[3] comes twice in the batch.
    batch = [events[1], events[2], events[3], events[3], events[4]]
    assert await handle_events(c, consumer, batch) == 3
    assert await handle_events(c, consumer, batch) == 0
    assert await _processed(c, consumer) == Counter({e["id"]: 1 for e in events})
    records = {s for s in sent if s.lstrip().upper().startswith("INSERT INTO PROCESSED_EVENT")}
    assert len(records) == 1


async def test_the_embedded_relay_and_consumer_handle_each_event_once(sqlite_container: Container) -> None:
    c = sqlite_container
    topic = f"test.{uuid.uuid4().hex[:8]}"
    ids = await _write_events(c, topic, 7)
    while await relay_once(c, batch=3):
        pass
    assert await _unpublished(c, ids) == 0
    queue = c.event_queue
    queued = [queue.get_nowait() for _ in range(queue.qsize())]
    assert sorted(int(e["id"]) for e in queued if e["topic"] == topic) == ids
    for e in queued:
        queue.put_nowait(e)
    queue.put_nowait(queued[0])  # a redelivery
    handled = 0
    while n := await consume_once(c, consumer_name="test", block_ms=50):
        handled += n
    assert handled == len(queued) + 1
    counts = await _processed(c, "notifications")
    assert all(counts[str(i)] == 1 for i in ids)
    consumer = f"test-{uuid.uuid4().hex[:8]}"
    events = [{"id": f"{consumer}-{i}", "topic": topic, "key": "k", "payload": "{}"} for i in range(3)]
    assert await handle_events(c, consumer, events[:1]) == 1
    assert await handle_events(c, consumer, [events[0], events[1], events[1], events[2]]) == 2


async def test_old_published_events_and_their_records_are_pruned_unpublished_ones_never(
    pg_container: Container,
) -> None:
    await _prune_case(pg_container)


async def test_pruning_on_the_embedded_store(sqlite_container: Container) -> None:
    await _prune_case(sqlite_container)


async def _prune_case(c: Container) -> None:
    topic = f"test.{uuid.uuid4().hex[:8]}"
    ids = await _write_events(c, topic, 5)
    now = utcnow()
    old = now - dt.timedelta(days=c.settings.event_retention_days, hours=1)
    recent = now - dt.timedelta(days=c.settings.event_retention_days, hours=-1)
    consumer = f"c-{topic}"
    async with c.sessionmaker() as session, session.begin():
        # ids[0], ids[1]: published long ago; ids[2]: published lately; ids[3]: unpublished and old;
        # ids[4]: unpublished and new.
        await session.execute(update(Outbox).where(Outbox.id.in_(ids[:2])).values(published_at=old))
        await session.execute(update(Outbox).where(Outbox.id == ids[2]).values(published_at=recent))
        await session.execute(update(Outbox).where(Outbox.id == ids[3]).values(created_at=old))
        await session.execute(
            insert(ProcessedEvent),
            [
                {"consumer": consumer, "event_id": str(ids[0]), "processed_at": old},
                {"consumer": consumer, "event_id": str(ids[1]), "processed_at": old},
                {"consumer": consumer, "event_id": str(ids[2]), "processed_at": recent},
            ],
        )
    gone = await prune_events(c, force=True)
    assert gone is not None and gone["outbox"] >= 2 and gone["processed"] >= 2
    async with c.sessionmaker() as session:
        left = set((await session.execute(select(Outbox.id).where(Outbox.id.in_(ids)))).scalars())
    assert left == set(ids[2:])
    assert set(await _processed(c, consumer)) == {str(ids[2])}
    # Not due again within the minute (the next pass is a no-op), unless forced.
    assert await prune_events(c) is None
    assert await prune_events(c, force=True) == {"outbox": 0, "processed": 0}


async def test_under_a_steady_flow_the_relay_gathers_events_into_few_batches(pg_container: Container) -> None:
    """A partial batch is followed by a pause (LINGER_S), not by the next poll at once: events written
    every few milliseconds for a second go out in a handful of batches, not one poll per handful."""
    c = pg_container
    async with c.sessionmaker() as session, session.begin():  # start from a drained outbox
        await session.execute(
            update(Outbox).where(Outbox.published_at.is_(None)).values(published_at=utcnow())
        )
    sent = _statements(c)
    relay = asyncio.create_task(_relay_loop(c))
    try:
        topic = f"test.{uuid.uuid4().hex[:8]}"
        ids: list[int] = []
        started = time.monotonic()
        for _ in range(50):  # a committer's flow in a sale: tens of events every few tens of ms
            ids += await _write_events(c, topic, 40)
            await asyncio.sleep(0.02)
        for _ in range(100):  # everything is published soon after the flow stops
            await asyncio.sleep(0.05)
            async with c.sessionmaker() as session:
                query = (
                    select(func.count())
                    .select_from(Outbox)
                    .where(Outbox.id.in_(ids), Outbox.published_at.is_(None))
                )
                if (await session.execute(query)).scalar_one() == 0:
                    break
        else:
            raise AssertionError("events left unpublished")
        flow_s = time.monotonic() - started
    finally:
        relay.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await relay
    stamps = [s for s in sent if s.lstrip().upper().startswith("UPDATE OUTBOX")]
    # About one batch per LINGER_S while the flow lasts (polling at once after each partial batch made
    # about twice as many here, and far more under a real crowd).
    assert 1 <= len(stamps) <= flow_s / LINGER_S + 2, (len(stamps), flow_s)
