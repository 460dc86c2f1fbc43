"""The read model over HTTP: cached views and lists never show an order as it was before a change
that answered, and the GET answers are the response models' bytes."""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx
import pytest
from pydantic import TypeAdapter
from sqlalchemy import update

from railbook.adapters.db.models import Order
from railbook.api.routers.orders import order_out
from railbook.api.schemas_members import MeOut
from railbook.api.schemas_orders import MemberTicketOut, OrderPage
from railbook.domain.pricing import yuan_text
from railbook.services.after_sale.cancel import expire_unpaid
from railbook.services.booking.read_model import get_order, list_orders, list_tickets
from railbook.services.booking.view_cache import decode_order, decode_page, encode_order, encode_page
from railbook.services.members.service import _ensure_account, get_member
from tests.api.after_sale import container_of, held_order, journey, make_train, member_with
from tests.support import wait_until


async def _get(client: httpx.AsyncClient, member: dict[str, Any], path: str) -> Any:
    r = await client.get(path, headers=member["headers"])
    assert r.status_code == 200, r.text
    return r.json()


async def _all_views(client: httpx.AsyncClient, member: dict[str, Any], order_id: str) -> list[Any]:
    """The order as its own route, the order list and the ticket list show it (each cached)."""
    one = await _get(client, member, f"/api/v1/orders/{order_id}")
    page = await _get(client, member, "/api/v1/orders")
    listed = next(o for o in page["items"] if o["order_id"] == order_id)
    tickets = [t for t in await _get(client, member, "/api/v1/tickets") if t["order_id"] == order_id]
    return [one, listed, tickets]


async def test_every_change_is_seen_by_every_read_at_once(client: httpx.AsyncClient) -> None:
    train = await make_train(client, days=(4,))
    member = await member_with(client, 2)
    order = await held_order(client, member, journey(train, 4, member["passengers"]))
    oid = order["order_id"]
    for _ in range(2):  # the second round is served from the cache
        one, listed, tickets = await _all_views(client, member, oid)
        assert one == listed and one["status"] == "SUCCESS" and one["payment_status"] == "UNPAID"
        assert {t["status"] for t in tickets} == {"UNPAID"}
    r = await client.post(f"/api/v1/orders/{oid}/pay", json={"method": "mock"}, headers=member["headers"])
    assert r.status_code == 200, r.text
    one, listed, tickets = await _all_views(client, member, oid)
    assert one == listed == r.json() and one["payment_status"] == "PAID"
    assert {t["status"] for t in tickets} == {"PAID"}
    refunded = order["tickets"][0]["ticket_id"]
    r = await client.post(f"/api/v1/tickets/{refunded}/refund", headers=member["headers"])
    assert r.status_code == 200, r.text
    one, listed, tickets = await _all_views(client, member, oid)
    assert one == listed and one["payment_status"] == "PARTLY_REFUNDED"
    assert {t["ticket_id"]: t["status"] for t in tickets}[refunded] == "REFUNDED"


async def test_the_view_the_committer_publishes_is_the_one_the_database_reads(
    client: httpx.AsyncClient,
) -> None:
    """The committer keeps each order it writes in the cache with its view as written; that view is,
    field for field, what the database's read of the order answers."""
    train = await make_train(client, days=(4,), rows=2)
    member = await member_with(client, 3)
    container = container_of(client)
    body = journey(train, 4, member["passengers"])
    body["passengers"][1]["seat_pref"] = "F"
    r = await client.post("/api/v1/orders", json=body, headers=member["headers"])
    assert r.status_code == 202, r.text
    oid = r.json()["order_id"]

    async def published() -> str | None:
        return (await container.order_views.order(oid))[0]

    cached = await wait_until(published, what="the committer to publish the order's view")
    owner, view = decode_order(cached)
    assert owner == member["member_id"]
    assert view == (await container.order_reads.committed(member["member_id"], [oid]))[oid]
    assert view.status == "SUCCESS" and len(view.tickets) == 3


@pytest.mark.parametrize("action", ["pay", "cancel"])
async def test_a_payment_or_cancel_answers_the_order_as_it_reads_back(
    client: httpx.AsyncClient, action: str
) -> None:
    """The member's answer is the order as any read shows it afterwards: built from the cached view
    when there is one, read back when there is none, and for a repeat of the request."""
    train = await make_train(client, days=(4, 5), rows=2)
    member = await member_with(client, 2)
    container = container_of(client)
    body = {"method": "mock"} if action == "pay" else None
    for offset, cached in ((4, True), (5, False)):
        order = await held_order(client, member, journey(train, offset, member["passengers"]))
        oid = order["order_id"]
        if cached:  # polled until SUCCESS: the poll filled the cache
            assert (await container.order_views.order(oid))[0] is not None
        else:
            await container.order_views.forget([oid], [member["member_id"]])
        path = f"/api/v1/orders/{oid}/{action}"
        first = await client.post(path, json=body, headers=member["headers"])
        assert first.status_code == 200, first.text
        again = await client.post(path, json=body, headers=member["headers"])
        one = await _get(client, member, f"/api/v1/orders/{oid}")
        assert first.json() == again.json() == one, (cached, first.json(), one)
        want = ("PAID", "PAID") if action == "pay" else ("CANCEL", "CANCELLED")
        assert (one["payment_status"] if action == "pay" else one["status"]) == want[0]
        assert {t["status"] for t in one["tickets"]} == {want[1]}


async def test_cancel_and_expiry_are_seen_at_once(client: httpx.AsyncClient) -> None:
    train = await make_train(client, days=(4,))
    member = await member_with(client, 2)
    first = await held_order(client, member, journey(train, 4, member["passengers"][:1]))
    second = await held_order(client, member, journey(train, 4, member["passengers"][1:]))
    await _all_views(client, member, first["order_id"])
    await _all_views(client, member, second["order_id"])
    r = await client.post(f"/api/v1/orders/{first['order_id']}/cancel", headers=member["headers"])
    assert r.status_code == 200, r.text
    one, listed, tickets = await _all_views(client, member, first["order_id"])
    assert one == listed == r.json() and one["status"] == "CANCEL"
    assert {t["status"] for t in tickets} == {"CANCELLED"}
    container = container_of(client)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    async with container.sessionmaker() as session, session.begin():
        await session.execute(update(Order).where(Order.id == second["order_id"]).values(pay_deadline=past))
    await expire_unpaid(container)  # the background loop may have done it already: either way
    one, listed, tickets = await _all_views(client, member, second["order_id"])
    assert one == listed and one["status"] == "CANCEL"
    assert {t["status"] for t in tickets} == {"CANCELLED"}


async def test_a_fill_read_before_a_change_is_refused(client: httpx.AsyncClient) -> None:
    """The race: a reader reads the generation and the database, the change commits and invalidates,
    then the reader fills the cache with what it read. The fill must not land."""
    train = await make_train(client, days=(4,))
    member = await member_with(client, 1)
    order = await held_order(client, member, journey(train, 4, member["passengers"]))
    oid, mid = order["order_id"], member["member_id"]
    container = container_of(client)
    views = container.order_views
    _, generation = await views.order(oid)
    stale = await container.order_reads.committed(mid, [oid])
    _, list_generation = await views.member_entry(mid, "orders:20:")
    stale_page = await container.order_reads.page(mid, 20, None)
    r = await client.post(f"/api/v1/orders/{oid}/pay", json={"method": "mock"}, headers=member["headers"])
    assert r.status_code == 200, r.text
    assert generation is not None and list_generation is not None
    await views.keep_order(oid, generation, encode_order(mid, stale[oid]))
    await views.keep_member_entry(mid, "orders:20:", list_generation, encode_page(*stale_page))
    # What the cache holds now (if anything: the pay answer itself read the order again) is paid.
    cached, _ = await views.order(oid)
    assert cached is None or decode_order(cached)[1].payment_status == "PAID"
    cached_page, _ = await views.member_entry(mid, "orders:20:")
    assert cached_page is None or decode_page(cached_page)[0][0].payment_status == "PAID"
    assert (await get_order(container, member_id=mid, order_id=oid)).payment_status == "PAID"
    items, _ = await list_orders(container, member_id=mid)
    assert [v.payment_status for v in items if v.order_id == oid] == ["PAID"]


async def test_the_account_view_follows_a_change_of_role(client: httpx.AsyncClient) -> None:
    member = await member_with(client, 0)
    me = await _get(client, member, "/api/v1/me")
    assert me["role"] == "member" and await _get(client, member, "/api/v1/me") == me
    container = container_of(client)
    await _ensure_account(container, mobile=me["mobile"], password="x" * 12, name=me["name"], role="admin")
    assert (await _get(client, member, "/api/v1/me"))["role"] == "admin"
    assert (await get_member(container, member["member_id"])).role == "admin"


async def test_answers_are_the_response_models_bytes(client: httpx.AsyncClient) -> None:
    train = await make_train(client, days=(4,))
    member = await member_with(client, 2)
    order = await held_order(client, member, journey(train, 4, member["passengers"]))
    container = container_of(client)
    mid = member["member_id"]
    for _ in range(2):  # from the database, then from the cache
        r = await client.get(f"/api/v1/orders/{order['order_id']}", headers=member["headers"])
        view = await get_order(container, member_id=mid, order_id=order["order_id"])
        assert r.content == order_out(view).model_dump_json(by_alias=True).encode()
        assert r.headers["content-type"] == "application/json"
        r = await client.get("/api/v1/orders", headers=member["headers"])
        items, cursor = await list_orders(container, member_id=mid)
        page = OrderPage(items=[order_out(v) for v in items], next_cursor=cursor)
        assert r.content == page.model_dump_json(by_alias=True).encode()
        r = await client.get("/api/v1/tickets", headers=member["headers"])
        tickets = [
            MemberTicketOut.model_validate(
                {
                    "ticket_id": t.ticket_id,
                    "passenger_id": t.passenger_id,
                    "passenger_name": t.passenger_name,
                    "seat": t.seat,
                    "seat_class": t.seat_class,
                    "fare_type": t.fare_type,
                    "price": yuan_text(t.price_fen),
                    "status": t.status,
                    "order_id": t.order_id,
                    "train_code": t.train_code,
                    "date": t.date,
                    "from": t.from_station,
                    "to": t.to_station,
                }
            )
            for t in await list_tickets(container, member_id=mid)
        ]
        assert r.content == TypeAdapter(list[MemberTicketOut]).dump_json(tickets, by_alias=True)
        r = await client.get("/api/v1/me", headers=member["headers"])
        me = await get_member(container, mid)
        expected = MeOut(member_id=me.member_id, mobile=me.mobile, name=me.name, role=me.role)
        assert r.content == expected.model_dump_json().encode()
