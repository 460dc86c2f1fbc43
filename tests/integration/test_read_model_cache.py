"""The read model's cache (``OrderViewCache``) on real Redis and in process memory: generations move
on with every invalidation, a fill read before an invalidation never lands, entries expire."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from railbook.adapters.embedded.order_views import MemoryOrderViews
from railbook.adapters.redis.autopipe import AutoPipeline
from railbook.adapters.redis.order_views import RedisOrderViews, member_keys, order_keys
from railbook.bootstrap import make_redis
from railbook.services.booking.ports import OrderViewCache


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["redis", "memory"])
async def views(request: pytest.FixtureRequest) -> AsyncIterator[OrderViewCache]:
    if request.param == "memory":
        yield MemoryOrderViews(clock=Clock())
        return
    client: Any = make_redis(request.getfixturevalue("module_redis_url"))
    try:
        yield RedisOrderViews(client, AutoPipeline(client))
    finally:
        await client.aclose()


async def test_a_filled_view_is_served_until_its_order_changes(views: OrderViewCache) -> None:
    assert await views.order("o-1") == (None, 0)
    await views.keep_order("o-1", 0, "v1")
    assert await views.order("o-1") == ("v1", 0)
    await views.forget(["o-1"], [])
    assert await views.order("o-1") == (None, 1)
    await views.keep_order("o-1", 1, "v2")
    assert await views.order("o-1") == ("v2", 1)


async def test_a_fill_read_before_the_change_is_refused(views: OrderViewCache) -> None:
    """Reader: generation, then the database; writer: commit, then ``forget``; reader fills last."""
    _, seen = await views.order("o-2")
    assert seen == 0
    await views.forget(["o-2"], [7])
    await views.keep_order("o-2", seen, "before the change")
    assert await views.order("o-2") == (None, 1)
    _, member_seen = await views.member_entry(7, "orders:20:")
    await views.forget([], [7])
    await views.keep_member_entry(7, "orders:20:", 1, "also before")
    assert member_seen == 1
    assert await views.member_entry(7, "orders:20:") == (None, 2)


async def test_a_fill_before_the_change_is_dropped_by_it(views: OrderViewCache) -> None:
    _, seen = await views.order("o-3")
    await views.keep_order("o-3", seen, "before")
    await views.keep_member_entry(8, "tickets:200", 0, "list")
    await views.keep_member_entry(8, "account", 0, "me")
    await views.forget(["o-3"], [8])
    assert await views.order("o-3") == (None, 1)
    assert await views.member_entry(8, "tickets:200") == (None, 1)
    assert await views.member_entry(8, "account") == (None, 1)


async def test_member_entries_are_kept_apart_and_changes_of_others_leave_them(views: OrderViewCache) -> None:
    await views.keep_member_entry(9, "orders:20:", 0, "page")
    await views.keep_member_entry(9, "tickets:200", 0, "tickets")
    await views.keep_member_entry(10, "orders:20:", 0, "other")
    await views.forget(["o-other"], [10])
    assert await views.member_entry(9, "orders:20:") == ("page", 0)
    assert await views.member_entry(9, "tickets:200") == ("tickets", 0)
    assert await views.member_entry(10, "orders:20:") == (None, 1)


async def test_entries_expire_in_memory() -> None:
    clock = Clock()
    views = MemoryOrderViews(ttl_seconds=60, clock=clock)
    await views.keep_order("o-4", 0, "v")
    await views.keep_member_entry(1, "account", 0, "me")
    clock.now += 59
    assert (await views.order("o-4"))[0] == "v"
    clock.now += 2
    assert await views.order("o-4") == (None, 0)
    assert await views.member_entry(1, "account") == (None, 0)


async def test_redis_entries_carry_their_expiry(module_redis_url: str) -> None:
    # A database of this module's own: the session's apps invalidate their members' entries (member
    # 11's generation among them) in the session's database, and a moved generation refuses a fill.
    client: Any = make_redis(module_redis_url)
    try:
        views = RedisOrderViews(client, AutoPipeline(client), ttl_seconds=30)
        await views.keep_order("o-5", 0, "v")
        await views.keep_member_entry(11, "account", 0, "me")
        assert 0 < await client.ttl(order_keys("o-5")[0]) <= 30
        assert 0 < await client.ttl(member_keys(11)[0]) <= 30
        await client.hset(member_keys(11)[0], "account", "1:stale")  # a field whose time is long past
        assert await views.member_entry(11, "account") == (None, 0)
    finally:
        await client.aclose()


async def test_a_cache_that_cannot_be_asked_is_a_miss_with_no_generation() -> None:
    client: Any = make_redis("redis://127.0.0.1:1/0")
    try:
        views = RedisOrderViews(client, AutoPipeline(client))
        assert await views.order("o-6") == (None, None)
        assert await views.member_entry(1, "account") == (None, None)
        await views.keep_order("o-6", 0, "v")  # best effort: no error
        with pytest.raises(RedisConnectionError):
            await views.forget(["o-6"], [1])
    finally:
        await client.aclose()
