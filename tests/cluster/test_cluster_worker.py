"""The order committer on a real Redis Cluster: train-day streams on different nodes found and
committed, and a worker killed mid-batch whose messages a second one claims back. No committer of an
app runs in this module: only the workers under test consume the streams."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from railbook.adapters.db.models import Order
from railbook.adapters.redis.allocator import order_stream_key
from railbook.adapters.redis.stream import GROUP
from railbook.bootstrap import make_redis
from railbook.config import Settings
from tests.integration.sale_days import committer_running
from tests.integration.test_order_worker import killed_worker_is_rescued
from tests.support import (
    add_passenger,
    admin,
    app_client,
    container_for,
    make_train_day,
    order_body,
    register,
    wait_until,
)


@pytest.fixture(scope="module")
async def quiet_client(cluster_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app on PostgreSQL and the cluster, its background loops (the committer among them) not running."""
    async with app_client(cluster_settings, run_background=False) as client:
        yield client


@pytest.mark.slow
async def test_worker_killed_mid_batch_on_a_cluster_loses_and_doubles_nothing(
    quiet_client: httpx.AsyncClient, cluster_settings: Settings, pg_url: str
) -> None:
    url = str(cluster_settings.redis_url)
    await killed_worker_is_rescued(quiet_client, url, pg_url, make_redis(url, cluster=True), cluster=True)


async def test_the_committer_reads_streams_on_every_node(
    quiet_client: httpx.AsyncClient, cluster_settings: Settings
) -> None:
    """Orders on several train-days, whose streams live on different nodes, staged with no committer
    running; one committer then finds every stream and commits and acknowledges every order."""
    app = quiet_client
    quiet: Any = make_redis(str(cluster_settings.redis_url), cluster=True)
    try:
        headers = await admin(app)
        await quiet.initialize()
        days: list[dict[str, Any]] = []
        streams: list[str] = []
        nodes: set[str] = set()
        # Six train-days or more, until their streams live on at least two nodes (their slots follow
        # from random train codes).
        while len(days) < 6 or len(nodes) < 2:
            assert len(days) < 40, "the train-days should spread over the nodes"
            day = await make_train_day(app, headers, rows=2)
            days.append(day)
            stream = order_stream_key(day["train_code"], dt.date.fromisoformat(day["date"]))
            streams.append(stream)
            nodes.add(quiet.nodes_manager.get_node_from_slot(quiet.keyslot(stream)).name)
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

        async with container_for(cluster_settings) as worker, committer_running(worker, "cluster-committer"):
            await wait_until(committed, timeout=30, what="every order to be committed")
            await wait_until(acknowledged, timeout=15, what="every stream to be acknowledged")
    finally:
        await quiet.aclose()
