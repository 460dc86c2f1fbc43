"""An order on a real Redis Cluster: placed over HTTP on the app built with ``redis_cluster=True``
(idempotency key, the member's pending list, duplicate refusal, one seat per person at a time) and
committed by its committer."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
from collections.abc import AsyncIterator

import httpx
import pytest

from railbook.adapters.redis.allocator import order_stream_key
from railbook.config import Settings
from tests.api.test_trip_rules import _one_person_two_members
from tests.support import (
    add_passenger,
    admin,
    app_client,
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


async def test_simultaneous_orders_for_one_passenger_seat_one(client: httpx.AsyncClient) -> None:
    """On a cluster the trip claim is a round trip of its own, before the admission: of orders racing
    for one passenger on overlapping trains (their days on whichever nodes) one is accepted."""
    adm = await admin(client)
    days = [await make_train_day(client, adm, rows=4) for _ in range(3)]  # same hours: all overlap
    m = await register(client)
    p = await add_passenger(client, m["headers"])
    bodies = [order_body(day, [p]) for day in days for _ in range(2)]
    racing = await asyncio.gather(
        *[client.post("/api/v1/orders", json=b, headers=m["headers"]) for b in bodies]
    )
    assert sorted(r.status_code for r in racing) == [202] + [409] * 5, [r.text for r in racing]
    codes = {r.json()["error"]["code"] for r in racing if r.status_code == 409}
    assert codes <= {"DUPLICATE_ORDER", "TRIP_CONFLICT"}, codes


async def test_simultaneous_orders_for_one_person_by_two_members_seat_one(client: httpx.AsyncClient) -> None:
    """Two members list one person (one ID number, two passenger records): the person's trips live in
    one slot whichever member orders, so of their orders racing on overlapping trains one is
    accepted, and each refusal names the asking member's passenger."""
    adm = await admin(client)
    days = [await make_train_day(client, adm, rows=4) for _ in range(3)]  # same hours: all overlap
    s = await _one_person_two_members(client)
    orders = [(day, m, p) for day in days for m, p in ((s.a, s.pa), (s.b, s.pb))]
    racing = await asyncio.gather(
        *[
            client.post("/api/v1/orders", json=order_body(day, [p]), headers=m["headers"])
            for day, m, p in orders
        ]
    )
    assert sorted(r.status_code for r in racing) == [202] + [409] * 5, [r.text for r in racing]
    for (_, _, p), r in zip(orders, racing, strict=True):
        if r.status_code == 409:
            assert r.json()["error"]["code"] == "TRIP_CONFLICT", r.text
            assert r.json()["error"]["details"]["passenger_id"] == p, r.text


async def test_a_primary_that_stops_answering_is_an_outage_then_recovers(
    client: httpx.AsyncClient, cluster_ports: list[int]
) -> None:
    """The primary serving a train-day's slot stops answering (paused): an order for that day is
    answered 503 UNAVAILABLE with Retry-After, never a 500 or a hang; once it answers again the
    same order goes through, with no restart of the app."""
    day = await make_train_day(client, await admin(client), rows=4)
    m = await register(client)
    p = await add_passenger(client, m["headers"])
    container = client.app.state.container  # type: ignore[attr-defined]
    stream = order_stream_key(day["train_code"], dt.date.fromisoformat(day["date"]))
    node = container.redis.nodes_manager.get_node_from_slot(container.redis.keyslot(stream))
    pid = int((await container.redis.info("server", target_nodes=node))["process_id"])
    os.kill(pid, signal.SIGSTOP)
    try:
        r = await client.post("/api/v1/orders", json=order_body(day, [p]), headers=m["headers"])
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "UNAVAILABLE" and r.headers["Retry-After"]
    finally:
        os.kill(pid, signal.SIGCONT)

    async def accepted() -> httpx.Response | None:
        r = await client.post("/api/v1/orders", json=order_body(day, [p]), headers=m["headers"])
        assert r.status_code in (202, 503), r.text
        return r if r.status_code == 202 else None

    answer = await wait_until(accepted, timeout=30, what="the order to be accepted again")
    order = await wait_final(client, m["headers"], answer.json()["order_id"])
    assert order["status"] == "SUCCESS", order
