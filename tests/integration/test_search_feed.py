"""Search counts are exact after a commit in every process, not only the committer's: two apps on the
same PostgreSQL and Redis, one placing and committing orders (its in-process workers run), the other
only searching. The searcher's count snapshots are made to live a minute here, so only the change
feed (Redis pub/sub) can make it see a sale or a cancellation at once."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from railbook.adapters.redis.search_feed import RedisSearchFeed
from railbook.bootstrap import Container
from tests.support import (
    add_passenger,
    admin,
    app_client,
    app_settings,
    make_train_day,
    order_body,
    register,
    wait_final,
    wait_until,
)

SEARCH = "/api/v1/trains/search"


@pytest.fixture(scope="module")
async def apps(
    pg_url: str, module_redis_url: str
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """(committer, searcher): the first runs the order workers, the second serves search only."""
    settings = app_settings(pg_url, module_redis_url)
    async with (
        app_client(settings, run_background=True) as committer,
        app_client(settings, run_background=False) as searcher,
    ):
        container: Container = searcher.app.state.container  # type: ignore[attr-defined]
        search = container.search
        search.counts.hot_seconds = 60.0  # a snapshot outlives any test unless it is told of a change
        search.hot.ttl = 60.0
        yield committer, searcher


async def _remaining(client: httpx.AsyncClient, day: dict[str, Any]) -> int:
    r = await client.get(
        SEARCH,
        params={"from": day["stations"][0][0], "to": day["stations"][-1][0], "date": day["date"]},
    )
    assert r.status_code == 200, r.text
    (offer,) = [o for o in r.json() if o["train_code"] == day["train_code"]]
    return int(offer["seats"]["second"]["remaining"])


async def test_a_sale_committed_elsewhere_shows_in_search_at_once(
    apps: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    committer, searcher = apps
    day = await make_train_day(committer, await admin(committer), rows=2)
    before = await _remaining(searcher, day)  # the searcher's snapshot of the day
    assert before == 10
    member = await register(committer)
    pids = [await add_passenger(committer, member["headers"]) for _ in range(2)]
    r = await committer.post("/api/v1/orders", json=order_body(day, pids), headers=member["headers"])
    assert r.status_code == 202, r.text
    order = await wait_final(committer, member["headers"], r.json()["order_id"])
    assert order["status"] == "SUCCESS", order
    assert await _remaining(searcher, day) == before - 2

    r = await committer.post(f"/api/v1/orders/{order['order_id']}/cancel", headers=member["headers"])
    assert r.status_code == 200 and r.json()["status"] == "CANCEL", r.text
    assert await _remaining(searcher, day) == before


async def test_announcements_name_the_days_and_skip_their_sender(module_redis_url: str) -> None:
    """Each process hears the others' announcements, never its own."""
    client = aioredis.Redis.from_url(module_redis_url)
    ours, theirs = (
        RedisSearchFeed(client, channel="search:test"),
        RedisSearchFeed(client, channel="search:test"),
    )
    heard: list[list[tuple[str, dt.date]]] = []
    listening = asyncio.create_task(ours.listen(heard.append, lambda: None))
    try:
        day = ("G1", dt.date(2030, 1, 2))

        async def subscribed() -> bool:
            return bool((await client.pubsub_numsub("search:test"))[0][1])

        await wait_until(subscribed, what="the listener to subscribe")
        await ours.publish([("G9", dt.date(2030, 1, 1))])
        await theirs.publish([day])
        await wait_until(lambda: heard, what="the other process's announcement")
        assert heard == [[day]]
    finally:
        listening.cancel()
        await asyncio.gather(listening, return_exceptions=True)
        await client.aclose()
