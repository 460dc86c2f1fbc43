"""The order queue as /metrics reads it from Redis: entries not yet acknowledged by the committers'
group (pending or not yet delivered) and the acceptance time of the oldest; and the same figures of
the embedded in-process queue."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from railbook.adapters.embedded.queue import OrderQueue
from railbook.adapters.redis.queue_figures import order_queue_figures
from railbook.adapters.redis.stream import GROUP, STREAMS_SET
from railbook.services.booking.order_ids import issue_order_id, order_id_time


@pytest.fixture
async def redis(module_redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(module_redis_url, protocol=2)
    await client.flushdb()
    yield client
    await client.flushdb()
    await client.aclose()


async def _append(redis: aioredis.Redis, stream: str, ms: int, n: int) -> None:
    await redis.sadd(STREAMS_SET, stream)
    for k in range(n):
        await redis.xadd(stream, {"order": "{}"}, id=f"{ms}-{k}")


async def test_an_empty_queue(redis: aioredis.Redis) -> None:
    assert await order_queue_figures(redis) == (0, None)


async def test_undelivered_pending_and_acknowledged_entries(redis: aioredis.Redis) -> None:
    now_ms = int(time.time() * 1000)
    # A stream no committer has read yet: all its entries wait.
    await _append(redis, "{G1:2026-12-01}:orders", now_ms - 9000, 2)
    assert await order_queue_figures(redis) == (2, (now_ms - 9000) / 1000)
    # Another stream, read by the group: two delivered (one acknowledged), two not yet delivered.
    stream = "{G2:2026-12-01}:orders"
    await _append(redis, stream, now_ms - 20_000, 4)
    await redis.xgroup_create(stream, GROUP, id="0")
    read = await redis.xreadgroup(GROUP, "c1", {stream: ">"}, count=2)
    delivered = [entry_id for entry_id, _ in read[0][1]]
    await redis.xack(stream, GROUP, delivered[0])
    depth, oldest = await order_queue_figures(redis)
    assert depth == 2 + 3  # the first stream's two; one pending and two undelivered here
    assert oldest == (now_ms - 20_000) / 1000
    # Everything of the second stream acknowledged: the first stream's entries are the oldest left.
    rest = await redis.xreadgroup(GROUP, "c1", {stream: ">"})
    await redis.xack(stream, GROUP, delivered[1], *[entry_id for entry_id, _ in rest[0][1]])
    assert await order_queue_figures(redis) == (2, (now_ms - 9000) / 1000)


async def test_a_registered_stream_that_is_gone_counts_nothing(redis: aioredis.Redis) -> None:
    await redis.sadd(STREAMS_SET, "{G3:2026-12-01}:orders")
    assert await order_queue_figures(redis) == (0, None)


async def test_the_embedded_queue_figures() -> None:
    queue = OrderQueue()
    assert queue.waiting() == (0, None)
    first, second = issue_order_id("s" * 32, 1), issue_order_id("s" * 32, 2)
    await queue.put("G1", dt.date(2026, 12, 1), {"order_id": first, "order": "{}"})
    await queue.put("G1", dt.date(2026, 12, 1), {"order_id": second, "order": "{}"})
    assert queue.waiting() == (2, first)
    assert order_id_time(first) <= dt.datetime.now(dt.UTC)
    queue.done([first])
    assert queue.waiting() == (1, second)


async def test_a_queued_orders_position(redis: aioredis.Redis) -> None:
    """How many entries are ahead of an order, as its poll shows it: all of the stream before any
    committer read it; then the undelivered entries, scaled by where the order's time falls between
    the last delivered entry and the newest; none once the committers are past it."""
    from railbook.adapters.redis.autopipe import AutoPipeline
    from railbook.adapters.redis.stream_progress import queue_position

    batch = AutoPipeline(redis)
    stream = "{G3:2026-12-01}:orders"
    now_ms = int(time.time() * 1000)

    def record(ms: int) -> dict[str, str]:
        return {"created_at": dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat()}

    assert await queue_position(batch, GROUP, stream, record(now_ms)) == 0  # no stream yet
    for k in range(10):
        await redis.xadd(stream, {"order": "{}"}, id=f"{now_ms - 10_000 + 1000 * k}-0")
    assert await queue_position(batch, GROUP, stream, record(now_ms - 1000)) == 10  # no group yet
    await redis.xgroup_create(stream, GROUP, id="0")
    await redis.xreadgroup(GROUP, "c1", {stream: ">"}, count=2)  # delivered up to now - 9 s
    # Eight undelivered; an order halfway between the last delivered and the newest has four ahead.
    assert await queue_position(batch, GROUP, stream, record(now_ms - 5000)) == 4
    assert await queue_position(batch, GROUP, stream, record(now_ms - 1000)) == 8
    assert await queue_position(batch, GROUP, stream, record(now_ms - 9500)) == 0
