"""The allocator on a real Redis Cluster: the differential tests of ``tests/integration`` (the Lua
allocator, the domain model and the in-process allocator answer alike) and the racing clients, with
every script call on its train-day's slot; and the automatic pipeline's routing by slot, redirections
included."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from railbook.adapters.redis.cluster import ClusterAutoPipeline
from railbook.bootstrap import make_redis
from tests.integration.test_allocator_concurrency import race
from tests.integration.test_allocator_differential import (
    Env,
    test_counts_past_one_byte,
    test_equal_best_fit_runs_go_to_the_lowest_seat,
    test_stop_index_past_any_train,
    test_three_allocators_agree,
    test_unloaded_day_is_not_found_everywhere,
)

pytestmark = pytest.mark.slow

__all__ = [
    "test_counts_past_one_byte",
    "test_equal_best_fit_runs_go_to_the_lowest_seat",
    "test_stop_index_past_any_train",
    "test_three_allocators_agree",
    "test_unloaded_day_is_not_found_everywhere",
]


@pytest.fixture(scope="module")
def env(cluster_url: str) -> Iterator[Env]:
    """The differential tests' environment on a cluster client (each example on a private loop)."""
    loop = asyncio.new_event_loop()
    client = make_redis(cluster_url, cluster=True)
    try:
        yield Env(loop, client)
    finally:
        loop.run_until_complete(client.aclose())
        loop.close()


async def test_racing_cluster_clients_never_oversell(cluster_url: str) -> None:
    await race([make_redis(cluster_url, cluster=True) for _ in range(6)])


async def test_a_group_spanning_nodes_comes_back_in_order(cluster_url: str) -> None:
    client: Any = make_redis(cluster_url, cluster=True)
    try:
        pipe = ClusterAutoPipeline(client)
        keys = [f"spread:{i}" for i in range(30)]
        assert len({client.keyslot(k) for k in keys}) > 1
        await pipe.execute([("SET", k, i) for i, k in enumerate(keys)])
        replies = await asyncio.gather(*(pipe.execute([("INCR", k), ("GET", k)]) for k in keys))
        assert replies == [[i + 1, str(i + 1).encode()] for i in range(len(keys))]
        assert len(pipe._lanes) == len(client.get_primaries())  # one batching lane per node
        (crossed,) = await pipe.execute([("MGET", "spread:0", "spread:1")])
        assert isinstance(crossed, Exception)  # a command across slots is refused, not split silently
    finally:
        await client.aclose()


async def test_a_stale_slot_map_is_followed_to_the_right_node(cluster_url: str) -> None:
    """A command sent to a node that no longer serves its slot (MOVED) reaches the right one."""
    client: Any = make_redis(cluster_url, cluster=True)
    try:
        pipe = ClusterAutoPipeline(client)
        await pipe.execute([("SET", "moved:{a}", "1")])
        manager = client.nodes_manager
        slot = client.keyslot("moved:{a}")
        right = manager.get_node_from_slot(slot)
        wrong = next(n for n in client.get_primaries() if n.name != right.name)
        manager.slots_cache[slot] = [wrong]
        assert await pipe.execute([("GET", "moved:{a}"), ("INCR", "moved:{a}")]) == [b"1", 2]
        assert manager.get_node_from_slot(slot).name == right.name
    finally:
        await client.aclose()
