"""The distributed OrderGuard's sale tokens and duplicate markers on a real Redis: what the committer's
settle gives back, one script call per train-day batch, and the markers a clash of trips reads."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from redis.asyncio import Redis

from railbook.adapters.redis.autopipe import AutoPipeline
from railbook.adapters.redis.protection import (
    RELEASE_CHUNK,
    RELEASE_LUA,
    RedisOrderGuard,
    marker_key,
    tokens_key,
)

DAY = dt.date(2030, 3, 1)


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url, socket_timeout=2)
    yield client
    await client.aclose()


class Recording(AutoPipeline):
    """The guard's shared batches, noting every command sent."""

    def __init__(self, redis: Redis) -> None:
        super().__init__(redis)
        self.sent: list[tuple[Any, ...]] = []

    async def execute(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        self.sent += commands
        return await super().execute(commands)


def _guard(redis: Redis) -> RedisOrderGuard:
    return RedisOrderGuard(
        redis, member_orders_per_minute=0, ip_requests_per_second=0, autopipe=Recording(redis)
    )


async def _admit(
    guard: RedisOrderGuard, code: str, member: int, passengers: list[int], tokens: int = 10_000
) -> str:
    order_id = str(uuid.uuid4())
    record = {"order_id": order_id, "member_id": member, "train_code": code, "date": DAY.isoformat()}
    refused = await guard.admit_order(
        code, DAY, member, passengers, order_id, tokens, record=record, idempotency=None, checked=True
    )
    assert refused is None
    return order_id


async def test_one_release_settles_a_batch_and_leaves_other_orders_alone(redis: Redis) -> None:
    guard = _guard(redis)
    code = f"G{uuid.uuid4().int % 90000 + 10000}"
    a = await _admit(guard, code, 1, [11, 12])
    b = await _admit(guard, code, 2, [21])
    c = await _admit(guard, code, 3, [31, 32, 33])
    other = await _admit(guard, code, 4, [41])
    assert await redis.zcard(tokens_key(code, DAY)) == 4
    # A later order took passenger 12's marker: releasing a must not touch it.
    await redis.set(marker_key(code, DAY, 1, 12), "later-order")

    # Committed orders: markers kept for the given seconds; a failed one: markers gone.
    assert isinstance(guard.batch, Recording)
    await redis.script_load(RELEASE_LUA)  # cached (another test may have flushed it): no resend counted
    guard.batch.sent.clear()
    await guard.settle(code, DAY, [(a, 1, [11, 12]), (b, 2, [21])], keep_markers_seconds=777)
    await guard.settle(code, DAY, [(c, 3, [31, 32, 33])])
    assert [c[0] for c in guard.batch.sent] == ["EVALSHA", "EVALSHA"]  # one call per release, not per order

    assert [m.decode() for m in await redis.zrange(tokens_key(code, DAY), 0, -1)] == [other]
    assert await redis.get(marker_key(code, DAY, 1, 11)) == a.encode()
    assert 700 < await redis.ttl(marker_key(code, DAY, 1, 11)) <= 777
    assert await redis.get(marker_key(code, DAY, 1, 12)) == b"later-order"
    assert await redis.ttl(marker_key(code, DAY, 1, 12)) == -1
    assert 700 < await redis.ttl(marker_key(code, DAY, 2, 21)) <= 777
    for p in (31, 32, 33):
        assert await redis.exists(marker_key(code, DAY, 3, p)) == 0
    assert await redis.get(marker_key(code, DAY, 4, 41)) == other.encode()

    # Settling again (a redelivered batch) changes nothing.
    await guard.settle(code, DAY, [(a, 1, [11, 12]), (b, 2, [21])], keep_markers_seconds=777)
    assert await redis.zcard(tokens_key(code, DAY)) == 1
    assert await redis.get(marker_key(code, DAY, 1, 12)) == b"later-order"


async def test_a_batch_larger_than_one_call_is_released_whole(redis: Redis) -> None:
    guard = _guard(redis)
    code = f"G{uuid.uuid4().int % 90000 + 10000}"
    n = 2 * RELEASE_CHUNK + 7
    orders = [(await _admit(guard, code, 1000 + i, [i]), 1000 + i, [i]) for i in range(n)]
    assert await redis.zcard(tokens_key(code, DAY)) == n
    assert isinstance(guard.batch, Recording)
    await redis.script_load(RELEASE_LUA)
    guard.batch.sent.clear()
    await guard.settle(code, DAY, orders)
    assert len(guard.batch.sent) == 3  # calls of at most RELEASE_CHUNK orders
    assert await redis.zcard(tokens_key(code, DAY)) == 0
    assert not [k async for k in redis.scan_iter(match=f"*{code}*:dup:*")]


async def test_marker_holders_name_each_passengers_order_once_the_day_is_trusted(redis: Redis) -> None:
    guard = _guard(redis)
    code = f"G{uuid.uuid4().int % 90000 + 10000}"
    a = await _admit(guard, code, 1, [11, 12])
    assert await guard.marker_holders(code, DAY, 1, [11, 12, 13]) is None  # not trusted yet
    await guard.trust_markers(code, DAY)
    assert await guard.marker_holders(code, DAY, 1, [11, 12, 13]) == {11: a, 12: a}
    assert await guard.marker_holders(code, DAY, 2, [11]) == {}  # another member's markers
    await guard.settle(code, DAY, [(a, 1, [11, 12])])
    assert await guard.marker_holders(code, DAY, 1, [11, 12]) == {}
