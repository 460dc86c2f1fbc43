"""Orders on a real Redis Cluster: placed over HTTP on the app built with ``redis_cluster=True`` and
committed; the committer reading train-day streams that live on different nodes."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from railbook.adapters.db.models import Order
from railbook.adapters.redis.allocator import order_stream_key
from railbook.adapters.redis.stream import GROUP
from railbook.bootstrap import Container, make_redis
from railbook.config import Settings
from tests.support import (
    add_passenger,
    admin,
    app_client,
    container_for,
    make_train_day,
    order_body,
    register,
    wait_final,
    wait_until,
)


@pytest.fixture(scope="module")
async def client(cluster_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app on PostgreSQL and the cluster, its committer and scheduler running."""
    async with app_client(cluster_settings) as c:
        yield c


async def test_an_order_over_http_is_committed(client: httpx.AsyncClient) -> None:
    day = await make_train_day(client, await admin(client), rows=4)
    m = await register(client)
    p = await add_passenger(client, m["headers"])
    headers = {**m["headers"], "Idempotency-Key": "cluster-order-1"}
    first = await client.post("/api/v1/orders", json=order_body(day, [p]), headers=headers)
    assert first.status_code == 202, first.text
    order_id = first.json()["order_id"]
    again = await client.post("/api/v1/orders", json=order_body(day, [p]), headers=headers)
    assert again.status_code == 202 and again.json()["order_id"] == order_id
    mine = await client.get("/api/v1/orders", headers=m["headers"])
    assert [o["order_id"] for o in mine.json()["items"]] == [order_id]
    order = await wait_final(client, m["headers"], order_id)
    assert order["status"] == "SUCCESS", order
    assert order["tickets"][0]["seat"]
    twice = await client.post("/api/v1/orders", json=order_body(day, [p]), headers=m["headers"])
    assert twice.status_code == 409, twice.text  # the passenger's trip and the markers hold


@asynccontextmanager
async def _committer(container: Container, name: str) -> AsyncIterator[None]:
    from railbook.workers.order_worker import run_stream_committer

    stop = asyncio.Event()
    task = asyncio.create_task(run_stream_committer(container, name, stop=stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_the_committer_reads_streams_on_every_node(cluster_settings: Settings) -> None:
    """Orders on several train-days, whose streams live on different nodes, staged with no committer
    running; one committer then finds every stream and commits and acknowledges every order."""
    quiet: Any = make_redis(str(cluster_settings.redis_url), cluster=True)
    async with app_client(cluster_settings, run_background=False) as app:
        headers = await admin(app)
        days = [await make_train_day(app, headers, rows=2) for _ in range(6)]
        streams = [order_stream_key(d["train_code"], dt.date.fromisoformat(d["date"])) for d in days]
        await quiet.initialize()
        nodes = {quiet.nodes_manager.get_node_from_slot(quiet.keyslot(s)).name for s in streams}
        assert len(nodes) > 1, "the train-days should spread over the nodes"
        ids = []
        for day in days:
            m = await register(app)
            p = await add_passenger(app, m["headers"])
            r = await app.post("/api/v1/orders", json=order_body(day, [p]), headers=m["headers"])
            assert r.status_code == 202, r.text
            ids.append(r.json()["order_id"])
        container = app.app.state.container  # type: ignore[attr-defined]

        async def committed() -> bool:
            async with container.sessionmaker() as session:
                n = await session.execute(select(func.count()).select_from(Order).where(Order.id.in_(ids)))
                return int(n.scalar_one()) == len(ids)

        async def acknowledged() -> bool:
            pending = [int((await quiet.xpending(s, GROUP))["pending"]) for s in streams]
            return not any(pending)

        async with container_for(cluster_settings) as worker, _committer(worker, "cluster-committer"):
            await wait_until(committed, timeout=30, what="every order to be committed")
            await wait_until(acknowledged, timeout=15, what="every stream to be acknowledged")
    await quiet.aclose()
