"""DUPLICATE_ORDER over the life of an order: pending, committed and unpaid, paid, cancelled, and after a
loss of the accept path's Redis data (the database answers until the markers are restored)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from railbook.adapters.embedded.queue import MemoryOrderGuard
from railbook.adapters.redis.allocator import day_tag
from railbook.adapters.redis.protection import marker_key, markers_valid_key, passengers_key
from tests.support import add_passenger, admin, make_train_day, order_body, register, wait_final


def _is_duplicate(r: httpx.Response) -> bool:
    return r.status_code == 409 and r.json()["error"]["code"] == "DUPLICATE_ORDER"


async def _committed_order(client: httpx.AsyncClient) -> tuple[dict[str, Any], dict[str, Any], int, int, str]:
    """A train-day, a member with two passengers, and a committed unpaid order for the first."""
    day = await make_train_day(client, await admin(client))
    m = await register(client)
    p1 = await add_passenger(client, m["headers"])
    p2 = await add_passenger(client, m["headers"], "孙七")
    r = await client.post("/api/v1/orders", json=order_body(day, [p1]), headers=m["headers"])
    assert r.status_code == 202, r.text
    final = await wait_final(client, m["headers"], r.json()["order_id"])
    assert final["status"] == "SUCCESS" and final["payment_status"] == "UNPAID", final
    return day, m, p1, p2, r.json()["order_id"]


async def test_committed_unpaid_order_is_a_duplicate_until_paid(client: httpx.AsyncClient) -> None:
    day, m, p1, p2, oid = await _committed_order(client)
    for i, j in ((0, -1), (1, 2), (0, 1)):
        r = await client.post("/api/v1/orders", json=order_body(day, [p2, p1], i, j), headers=m["headers"])
        assert _is_duplicate(r), r.text
    paid = await client.post(f"/api/v1/orders/{oid}/pay", json={"method": "mock"}, headers=m["headers"])
    assert paid.status_code == 200, paid.text
    # API.md: only a pending or unpaid order makes a duplicate; a paid ticket is a trip the passenger
    # holds on this train-day (TRIP_CONFLICT: one person, one seat at a time).
    again = await client.post("/api/v1/orders", json=order_body(day, [p1], 1, 2), headers=m["headers"])
    assert again.status_code == 409 and again.json()["error"]["code"] == "TRIP_CONFLICT", again.text


async def test_cancelled_order_frees_the_passenger(client: httpx.AsyncClient) -> None:
    day, m, p1, _, oid = await _committed_order(client)
    r = await client.post(f"/api/v1/orders/{oid}/cancel", headers=m["headers"])
    assert r.status_code == 200, r.text
    again = await client.post("/api/v1/orders", json=order_body(day, [p1]), headers=m["headers"])
    assert again.status_code == 202, again.text


async def test_committed_order_keeps_its_markers_until_the_pay_deadline(
    pg_client: httpx.AsyncClient, redis_url: str
) -> None:
    day, m, p1, _, oid = await _committed_order(pg_client)
    r = aioredis.Redis.from_url(redis_url)
    try:
        key = marker_key(day["train_code"], day["date"], m["member_id"], p1)
        assert (await r.get(key)) == oid.encode()
        settings = pg_client.app.state.container.settings  # type: ignore[attr-defined]
        assert await r.ttl(key) > settings.pay_deadline_seconds - 60
        paid = await pg_client.post(
            f"/api/v1/orders/{oid}/pay", json={"method": "mock"}, headers=m["headers"]
        )
        assert paid.status_code == 200, paid.text
        assert await r.exists(key) == 0
    finally:
        await r.aclose()


async def _wipe(client: httpx.AsyncClient, redis_url: str, day: dict[str, Any], member_id: int) -> None:
    """Lose the accept path's data of this train-day and member: Redis keys, or the embedded guard's."""
    guard = client.app.state.container.guard  # type: ignore[attr-defined]
    if isinstance(guard, MemoryOrderGuard):
        guard.markers.clear()
        guard.trusted_days.clear()
        return
    r = aioredis.Redis.from_url(redis_url)
    try:
        tag = day_tag(day["train_code"], __import__("datetime").date.fromisoformat(day["date"]))
        keys = [k async for k in r.scan_iter(match=f"*{tag}*")]
        keys += [k async for k in r.scan_iter(match=f"member:{member_id}:*")]
        assert any(k.decode() == markers_valid_key(day["train_code"], day["date"]) for k in keys)
        await r.delete(*keys)
    finally:
        await r.aclose()


@pytest.mark.parametrize("redis_url_of", ["pg", "sqlite"])
async def test_after_a_loss_of_the_markers_the_database_answers(
    redis_url_of: str,
    pg_client: httpx.AsyncClient,
    sqlite_client: httpx.AsyncClient,
    redis_url: str,
) -> None:
    client = pg_client if redis_url_of == "pg" else sqlite_client
    day, m, p1, p2, oid = await _committed_order(client)
    await _wipe(client, redis_url, day, m["member_id"])
    dup = await client.post("/api/v1/orders", json=order_body(day, [p2, p1], 1, 2), headers=m["headers"])
    assert _is_duplicate(dup), dup.text
    # The markers were restored from the database meanwhile: refused again, and the day sells on.
    if redis_url_of == "pg":
        r = aioredis.Redis.from_url(redis_url)
        try:
            assert await r.get(marker_key(day["train_code"], day["date"], m["member_id"], p1)) == oid.encode()
        finally:
            await r.aclose()
    dup = await client.post("/api/v1/orders", json=order_body(day, [p1], 0, 1), headers=m["headers"])
    assert _is_duplicate(dup), dup.text
    ok = await client.post("/api/v1/orders", json=order_body(day, [p2]), headers=m["headers"])
    assert ok.status_code == 202, ok.text
    assert (await wait_final(client, m["headers"], ok.json()["order_id"]))["status"] == "SUCCESS"


async def test_deleting_a_passenger_drops_the_cached_list(
    pg_client: httpx.AsyncClient, redis_url: str
) -> None:
    day, m, p1, p2, oid = await _committed_order(pg_client)
    ok = await pg_client.post("/api/v1/orders", json=order_body(day, [p2]), headers=m["headers"])
    assert ok.status_code == 202, ok.text
    # A passenger holding a ticket cannot be deleted (PASSENGER_HAS_TICKETS): free p1 first.
    cancelled = await pg_client.post(f"/api/v1/orders/{oid}/cancel", headers=m["headers"])
    assert cancelled.status_code == 200, cancelled.text
    r = aioredis.Redis.from_url(redis_url)
    try:
        assert await r.hexists(passengers_key(m["member_id"]), str(p2))
        d = await pg_client.delete(f"/api/v1/passengers/{p1}", headers=m["headers"])
        assert d.status_code in (200, 204), d.text
        assert await r.exists(passengers_key(m["member_id"])) == 0
    finally:
        await r.aclose()
