"""An order on a real Redis Cluster: placed over HTTP on the app built with ``redis_cluster=True``
(idempotency key, the member's pending list, duplicate refusal) and committed by its committer."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from railbook.config import Settings
from tests.support import (
    add_passenger,
    admin,
    app_client,
    make_train_day,
    order_body,
    register,
    wait_final,
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
