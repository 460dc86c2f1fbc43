"""AutoPipeline on a real Redis: concurrent groups share round trips, yet each caller gets exactly
its own replies, in order; an error reply stays with its command; a lost script cache is reloaded;
a Redis that cannot be reached fails every waiting caller at once instead of hanging them."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from railbook.adapters.redis.autopipe import AutoPipeline, raise_errors


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url, socket_timeout=2)
    yield client
    await client.aclose()


async def test_concurrent_groups_share_round_trips_and_get_their_own_replies(redis: Redis) -> None:
    pipe = AutoPipeline(redis)
    tag = uuid.uuid4().hex
    counter = f"ap:{tag}:n"

    async def group(k: int) -> list[object]:
        key = f"ap:{tag}:{k}"
        return await pipe.execute([("SET", key, f"v{k}", "EX", 60), ("INCR", counter), ("GET", key)])

    replies = await asyncio.gather(*(group(k) for k in range(300)))
    for k, (ok, n, value) in enumerate(replies):
        assert ok == b"OK" and value == f"v{k}".encode()
        assert isinstance(n, int) and 1 <= n <= 300
    # every INCR ran exactly once, and the 300 groups went out in far fewer round trips
    assert sorted(r[1] for r in replies) == list(range(1, 301))
    assert pipe.commands == 900
    assert pipe.batches < 100


async def test_an_error_reply_stays_with_its_command(redis: Redis) -> None:
    pipe = AutoPipeline(redis)
    key = f"ap:{uuid.uuid4().hex}"
    await redis.set(key, "not a number", ex=60)
    bad, good = await asyncio.gather(
        pipe.execute([("INCR", key), ("GET", key)]), pipe.execute([("EXISTS", key)])
    )
    assert isinstance(bad[0], ResponseError) and bad[1] == b"not a number"
    assert good == [1]
    with pytest.raises(ResponseError):
        raise_errors(bad)


async def test_a_malformed_command_fails_only_its_caller(redis: Redis) -> None:
    pipe = AutoPipeline(redis)
    results = await asyncio.gather(
        pipe.execute([("SET", "ap:x", None)]), pipe.execute([("PING",)]), return_exceptions=True
    )
    assert isinstance(results[0], TypeError)
    assert results[1] == [b"PONG"]


async def test_a_lost_script_cache_is_reloaded(redis: Redis) -> None:
    pipe = AutoPipeline(redis)
    script = redis.register_script("return ARGV[1] .. KEYS[1]")
    await redis.script_flush()
    assert await pipe.evalsha(script, ["k"], ["v"]) == b"vk"
    assert await pipe.evalsha(script, ["k2"], ["w"]) == b"wk2"


async def test_an_unreachable_redis_fails_every_waiting_caller() -> None:
    client = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5, socket_timeout=0.5)
    pipe = AutoPipeline(client)
    try:
        results = await asyncio.wait_for(
            asyncio.gather(*(pipe.execute([("PING",)]) for _ in range(20)), return_exceptions=True), 10
        )
    finally:
        await client.aclose()
    assert all(isinstance(r, RedisConnectionError) for r in results)
