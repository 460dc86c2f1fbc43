"""Orders over HTTP against the real app (PostgreSQL + Redis, and embedded SQLite)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from typing import Any

import httpx

from railbook.kit.clock import beijing_today
from tests.support import add_passenger, admin, make_train_day, order_body, register, wait_final


async def test_order_is_accepted_then_committed_with_tickets(client: httpx.AsyncClient) -> None:
    day = await make_train_day(client, await admin(client))
    m = await register(client)
    p1 = await add_passenger(client, m["headers"], "王五")
    p2 = await add_passenger(client, m["headers"], "赵六")
    r = await client.post("/api/v1/orders", json=order_body(day, [p1, p2], 0, 2), headers=m["headers"])
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "PENDING"
    order = await wait_final(client, m["headers"], r.json()["order_id"])
    assert order["status"] == "SUCCESS"
    assert order["payment_status"] == "UNPAID"
    assert order["from"] == day["stations"][0][0] and order["to"] == day["stations"][2][0]
    assert order["queue_position"] == 0 and order["error"] is None
    assert [t["passenger_id"] for t in order["tickets"]] == [p1, p2]
    assert {t["status"] for t in order["tickets"]} == {"UNPAID"}
    assert len({t["seat"] for t in order["tickets"]}) == 2
    price = order["tickets"][0]["price"]
    assert price.count(".") == 1 and len(price.split(".")[1]) == 2 and price != "0.00"
    total = sum(int(t["price"].replace(".", "")) for t in order["tickets"])
    assert order["total"] == f"{total // 100}.{total % 100:02d}"
    created = dt.datetime.fromisoformat(order["created_at"])
    deadline = dt.datetime.fromisoformat(order["pay_deadline"])
    assert (deadline - created).total_seconds() == 1800

    listing = await client.get("/api/v1/orders", headers=m["headers"])
    assert listing.status_code == 200
    assert [o["order_id"] for o in listing.json()["items"]] == [order["order_id"]]
    tickets = await client.get("/api/v1/tickets", headers=m["headers"])
    assert tickets.status_code == 200
    assert sorted(t["passenger_id"] for t in tickets.json()) == [p1, p2]
    assert {t["train_code"] for t in tickets.json()} == {day["train_code"]}


async def test_stations_by_telegraph_code_and_seat_letters(client: httpx.AsyncClient) -> None:
    day = await make_train_day(client, await admin(client))
    m = await register(client)
    p1 = await add_passenger(client, m["headers"])
    body = order_body(day, [p1], seat_pref="F")
    body["from"], body["to"] = day["stations"][1][1], day["stations"][3][1]
    r = await client.post("/api/v1/orders", json=body, headers=m["headers"])
    assert r.status_code == 202, r.text
    order = await wait_final(client, m["headers"], r.json()["order_id"])
    assert order["status"] == "SUCCESS"
    assert order["tickets"][0]["seat"].endswith("F")
    assert order["from"] == day["stations"][1][0]


async def test_same_idempotency_key_gives_one_order(client: httpx.AsyncClient) -> None:
    day = await make_train_day(client, await admin(client))
    m = await register(client)
    p1 = await add_passenger(client, m["headers"])
    headers = {**m["headers"], "Idempotency-Key": f"key-{uuid.uuid4()}"}
    body = order_body(day, [p1])
    first, second = await asyncio.gather(
        client.post("/api/v1/orders", json=body, headers=headers),
        client.post("/api/v1/orders", json=body, headers=headers),
    )
    assert first.status_code == second.status_code == 202, (first.text, second.text)
    assert first.json()["order_id"] == second.json()["order_id"]
    await wait_final(client, m["headers"], first.json()["order_id"])
    third = await client.post("/api/v1/orders", json=body, headers=headers)
    assert third.status_code == 202 and third.json()["order_id"] == first.json()["order_id"]
    other = await client.post("/api/v1/orders", json=order_body(day, [p1], 0, 1), headers=headers)
    assert other.status_code == 422 and other.json()["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"
    listing = await client.get("/api/v1/orders", headers=m["headers"])
    assert len(listing.json()["items"]) == 1


async def _lose_member_cache(redis_url: str, member_id: int) -> int:
    """Lose what the shared cache keeps of a member (a loss of Redis data loses these together):
    the Idempotency-Keys of its orders and its cached passengers. Returns the keys deleted."""
    import redis.asyncio as aioredis

    r = aioredis.Redis.from_url(redis_url)
    try:
        keys = [k async for k in r.scan_iter(match=f"idem:{member_id}:*")]
        idem = len(keys)
        keys += [k async for k in r.scan_iter(match=f"member:{{{member_id}}}:*")]
        if keys:
            await r.delete(*keys)
        return idem
    finally:
        await r.aclose()


async def test_idempotency_key_known_only_to_the_database(
    pg_client: httpx.AsyncClient, redis_url: str
) -> None:
    """After a loss of the cache, the system of record still recognises the key."""
    client = pg_client
    day = await make_train_day(client, await admin(client))
    m = await register(client)
    p1 = await add_passenger(client, m["headers"])
    headers = {**m["headers"], "Idempotency-Key": "db-known-key"}
    first = await client.post("/api/v1/orders", json=order_body(day, [p1]), headers=headers)
    assert first.status_code == 202
    await wait_final(client, m["headers"], first.json()["order_id"])
    assert await _lose_member_cache(redis_url, m["member_id"]) == 1
    again = await client.post("/api/v1/orders", json=order_body(day, [p1]), headers=headers)
    assert again.status_code == 202 and again.json()["order_id"] == first.json()["order_id"]


async def test_a_filled_passenger_cache_brings_the_members_keys_back(
    pg_client: httpx.AsyncClient, redis_url: str
) -> None:
    """A keyed order whose passengers the shared cache knows reads no database for its key: so every
    fill of that cache (a login here) restores the keys the system of record keeps, for what is left
    of their time, and a retry after a loss of the cache and a new login still gets the first order."""
    import redis.asyncio as aioredis

    from tests.support import login

    client = pg_client
    day = await make_train_day(client, await admin(client))
    m = await register(client)
    p1 = await add_passenger(client, m["headers"])
    headers = {**m["headers"], "Idempotency-Key": "kept-key"}
    first = await client.post("/api/v1/orders", json=order_body(day, [p1]), headers=headers)
    assert first.status_code == 202
    await wait_final(client, m["headers"], first.json()["order_id"])
    assert await _lose_member_cache(redis_url, m["member_id"]) == 1
    fresh = await login(client, m["mobile"], m["password"])  # fills the passenger cache
    r = aioredis.Redis.from_url(redis_url)
    try:
        kept = [k async for k in r.scan_iter(match=f"idem:{m['member_id']}:*")]
        assert len(kept) == 1
        assert json.loads(await r.get(kept[0]))["order_id"] == first.json()["order_id"]
        assert 25 * 3600 < await r.ttl(kept[0]) <= 26 * 3600
        assert await r.exists(f"member:{{{m['member_id']}}}:passengers") == 1
    finally:
        await r.aclose()
    again = await client.post(
        "/api/v1/orders", json=order_body(day, [p1]), headers={**fresh, "Idempotency-Key": "kept-key"}
    )
    assert again.status_code == 202 and again.json()["order_id"] == first.json()["order_id"]


async def test_a_retry_under_its_key_after_the_train_sold_out_gets_its_order(
    client: httpx.AsyncClient,
) -> None:
    """The answer to a key is the first one, not the train's state since: a retry of an accepted
    order on a train now sold out (and known so) is its order again, not SOLD_OUT."""
    day = await make_train_day(client, await admin(client), rows=1)  # 5 seats
    m = await register(client)
    mine = await add_passenger(client, m["headers"])
    headers = {**m["headers"], "Idempotency-Key": "before-sold-out"}
    first = await client.post("/api/v1/orders", json=order_body(day, [mine]), headers=headers)
    assert first.status_code == 202
    others = await register(client)
    rest = [await add_passenger(client, others["headers"], name) for name in ("甲一", "乙二", "丙三", "丁四")]
    r = await client.post("/api/v1/orders", json=order_body(day, rest), headers=others["headers"])
    assert r.status_code == 202, r.text
    late = await register(client)
    p = await add_passenger(client, late["headers"])
    refused = await client.post("/api/v1/orders", json=order_body(day, [p]), headers=late["headers"])
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "SOLD_OUT"
    again = await client.post("/api/v1/orders", json=order_body(day, [mine]), headers=headers)
    assert again.status_code == 202, again.text
    assert again.json()["order_id"] == first.json()["order_id"]


async def test_duplicate_order_for_the_same_passenger_is_refused(client: httpx.AsyncClient) -> None:
    day = await make_train_day(client, await admin(client))
    m = await register(client)
    p1 = await add_passenger(client, m["headers"])
    p2 = await add_passenger(client, m["headers"], "孙七")
    r = await client.post("/api/v1/orders", json=order_body(day, [p1]), headers=m["headers"])
    assert r.status_code == 202
    dup = await client.post("/api/v1/orders", json=order_body(day, [p2, p1], 1, 2), headers=m["headers"])
    assert dup.status_code == 409 and dup.json()["error"]["code"] == "DUPLICATE_ORDER"
    await wait_final(client, m["headers"], r.json()["order_id"])
    # Committed and unpaid: still a duplicate (the database says so once the marker is gone).
    await asyncio.sleep(0)
    dup = await client.post("/api/v1/orders", json=order_body(day, [p1], 0, 1), headers=m["headers"])
    assert dup.status_code == 409 and dup.json()["error"]["code"] == "DUPLICATE_ORDER"
    ok = await client.post("/api/v1/orders", json=order_body(day, [p2]), headers=m["headers"])
    assert ok.status_code == 202, ok.text


async def test_sold_out_is_answered_at_once(client: httpx.AsyncClient) -> None:
    day = await make_train_day(client, await admin(client), rows=1)  # 5 seats
    m = await register(client)
    pids = [await add_passenger(client, m["headers"], "乘客" + "甲乙丙丁戊己"[k]) for k in range(6)]
    r = await client.post("/api/v1/orders", json=order_body(day, pids[:5]), headers=m["headers"])
    assert r.status_code == 202
    sold = await client.post("/api/v1/orders", json=order_body(day, pids[5:]), headers=m["headers"])
    assert sold.status_code == 409 and sold.json()["error"]["code"] == "SOLD_OUT"
    # The refusal left no duplicate marker or token behind: the same passenger may try another journey.
    order = await wait_final(client, m["headers"], r.json()["order_id"])
    assert order["status"] == "SUCCESS"


async def test_bad_inputs(client: httpx.AsyncClient) -> None:
    day = await make_train_day(client, await admin(client))
    m = await register(client)
    other = await register(client)
    mine = await add_passenger(client, m["headers"])
    theirs = await add_passenger(client, other["headers"])
    h = m["headers"]

    async def post(body: Any, headers: dict[str, str] = h, **kw: Any) -> httpx.Response:
        return await client.post("/api/v1/orders", json=body, headers=headers, **kw)

    r = await post(order_body(day, [theirs]))
    assert r.status_code == 404 and r.json()["error"]["code"] == "PASSENGER_NOT_FOUND"
    r = await post(order_body(day, [mine]), headers={"Authorization": h["Authorization"][:-3] + "abc"})
    assert r.status_code == 401
    r = await post(order_body(day, [mine]), headers={})
    assert r.status_code == 401
    for n in (0, 6):
        r = await post(order_body(day, [mine] * n))
        assert r.status_code == 422 and r.json()["error"]["code"] == "VALIDATION_ERROR", n
    huge = {**order_body(day, []), "passengers": [{"passenger_id": 1}] * 10_000}
    r = await post(huge)
    assert r.status_code == 422 and r.json()["error"]["code"] == "VALIDATION_ERROR"
    r = await post(order_body(day, [mine], seat_pref="Z"))
    assert r.status_code == 422, r.text
    r = await post(
        {**order_body(day, [mine]), "date": (beijing_today() + dt.timedelta(days=400)).isoformat()}
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "DATE_NOT_ON_SALE"
    r = await post({**order_body(day, [mine]), "date": (beijing_today() - dt.timedelta(days=1)).isoformat()})
    assert r.status_code == 422 and r.json()["error"]["code"] == "DATE_NOT_ON_SALE"
    r = await post({**order_body(day, [mine]), "train_code": "G999999"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "TRAIN_NOT_FOUND"
    r = await post(order_body(day, [mine], 2, 1))
    assert r.status_code == 422 and r.json()["error"]["code"] == "BAD_JOURNEY"
    r = await post({**order_body(day, [mine]), "from": "没有这个站"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "STATION_NOT_FOUND"
    r = await post(
        {**order_body(day, [mine]), "passengers": [{"passenger_id": mine, "seat_class": "luxury"}]}
    )
    assert r.status_code == 422
    r = await post(
        {**order_body(day, [mine]), "passengers": [{"passenger_id": mine, "seat_class": "business"}]}
    )
    assert r.status_code == 422
    r = await client.post(
        "/api/v1/orders", content=b'{"date": "2026-', headers={**h, "content-type": "application/json"}
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "VALIDATION_ERROR"
    # A valid body sent as another media type is not read as JSON (the route's own 422, not an order).
    raw = json.dumps(order_body(day, [mine])).encode()
    for media_type in ("text/plain", "application/jsonx"):
        r = await client.post("/api/v1/orders", content=raw, headers={**h, "content-type": media_type})
        assert r.status_code == 422 and r.json()["error"]["code"] == "VALIDATION_ERROR", (media_type, r.text)
    # Nothing was queued or written by any of these.
    listing = await client.get("/api/v1/orders", headers=h)
    assert listing.json()["items"] == []
    # The same body with a charset parameter is an order.
    r = await client.post(
        "/api/v1/orders", content=raw, headers={**h, "content-type": "application/json; charset=utf-8"}
    )
    assert r.status_code == 202, r.text


async def test_reading_orders_of_others_and_made_up_ids(client: httpx.AsyncClient) -> None:
    day = await make_train_day(client, await admin(client))
    m = await register(client)
    other = await register(client)
    p1 = await add_passenger(client, m["headers"])
    r = await client.post("/api/v1/orders", json=order_body(day, [p1]), headers=m["headers"])
    order_id = r.json()["order_id"]
    await wait_final(client, m["headers"], order_id)
    assert (await client.get(f"/api/v1/orders/{order_id}", headers=other["headers"])).status_code == 404
    made_up = str(uuid.uuid4())
    r = await client.get(f"/api/v1/orders/{made_up}", headers=m["headers"])
    assert r.status_code == 404 and r.json()["error"]["code"] == "ORDER_NOT_FOUND"
    assert (await client.get("/api/v1/orders/not-an-id", headers=m["headers"])).status_code == 404


async def test_an_issued_id_nobody_knows_is_lost_in_failover(client: httpx.AsyncClient) -> None:
    """An id we issued that neither store knows (after a total loss of Redis) reads as FAILURE."""
    from railbook.services.booking.order_ids import issue_order_id

    m = await register(client)
    container = client.app.state.container  # type: ignore[attr-defined]
    order_id = issue_order_id(container.jwt_secret, m["member_id"])
    r = await client.get(f"/api/v1/orders/{order_id}", headers=m["headers"])
    assert r.status_code == 200 and r.json()["status"] == "PENDING"  # issued a moment ago
    raw = bytearray(uuid.UUID(order_id).bytes)
    old_ms = int.from_bytes(raw[:6], "big") - 60_000
    raw[:6] = old_ms.to_bytes(6, "big")
    stale = issue_from_bytes(container.jwt_secret, m["member_id"], bytes(raw))
    r = await client.get(f"/api/v1/orders/{stale}", headers=m["headers"])
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "FAILURE" and r.json()["error"]["code"] == "LOST_IN_FAILOVER"
    assert (
        await client.get(f"/api/v1/orders/{stale}", headers=(await register(client))["headers"])
    ).status_code == 404


def issue_from_bytes(secret: str, member_id: int, raw: bytes) -> str:
    """Re-sign an id whose time was moved back (what an id issued a minute ago looks like)."""
    from railbook.services.booking.order_ids import _order_tag

    body = bytearray(raw)
    body[12:16] = _order_tag(secret, member_id, bytes(body[:12]))
    return str(uuid.UUID(bytes=bytes(body)))


async def test_orders_page_newest_first_with_cursor(client: httpx.AsyncClient) -> None:
    m = await register(client)
    adm = await admin(client)
    ids = []
    for _ in range(3):
        day = await make_train_day(client, adm, stops=2)
        p = await add_passenger(client, m["headers"])
        r = await client.post("/api/v1/orders", json=order_body(day, [p]), headers=m["headers"])
        assert r.status_code == 202
        ids.append(r.json()["order_id"])
        await wait_final(client, m["headers"], ids[-1])
    first = await client.get("/api/v1/orders?limit=2", headers=m["headers"])
    assert [o["order_id"] for o in first.json()["items"]] == ids[::-1][:2]
    cursor = first.json()["next_cursor"]
    assert cursor
    rest = await client.get("/api/v1/orders", params={"limit": 2, "cursor": cursor}, headers=m["headers"])
    assert [o["order_id"] for o in rest.json()["items"]] == ids[:1]
    assert rest.json()["next_cursor"] is None
    bad = await client.get("/api/v1/orders", params={"cursor": "%%%"}, headers=m["headers"])
    assert bad.status_code == 422


async def test_a_lost_allocator_answer_keeps_the_order_and_refuses_a_second_one(
    client: httpx.AsyncClient,
) -> None:
    """The allocation ran (seats taken, order queued) but its answer never came back: the client gets
    503 + Retry-After naming the order, the order is confirmed by the committer, and a retry is a
    duplicate rather than a second purchase."""
    container = client.app.state.container  # type: ignore[attr-defined]
    day = await make_train_day(client, await admin(client))
    m = await register(client)
    p1 = await add_passenger(client, m["headers"])
    allocator = container.allocator
    real = allocator.allocate

    async def answer_lost(*args: Any, **kwargs: Any) -> Any:
        await real(*args, **kwargs)
        raise TimeoutError("reply lost")

    allocator.allocate = answer_lost
    try:
        r = await client.post("/api/v1/orders", json=order_body(day, [p1]), headers=m["headers"])
    finally:
        del allocator.allocate  # back to the class's method
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "UNAVAILABLE" and int(r.headers["retry-after"]) >= 1
    order_id = r.json()["error"]["details"]["order_id"]
    order = await wait_final(client, m["headers"], order_id)
    assert order["status"] == "SUCCESS" and len(order["tickets"]) == 1
    again = await client.post("/api/v1/orders", json=order_body(day, [p1]), headers=m["headers"])
    assert again.status_code == 409 and again.json()["error"]["code"] == "DUPLICATE_ORDER", again.text
    mine = await client.get("/api/v1/orders", headers=m["headers"])
    assert [o["order_id"] for o in mine.json()["items"]] == [order_id]
