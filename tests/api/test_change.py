"""Changing a ticket (改签) over HTTP on both store configurations (API.md "Change rules"): once only,
nobody pays twice, the difference paid or refunded, and a change that does not hold leaves the old
ticket and its seat as they were."""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx
from sqlalchemy import select, update

from railbook.adapters.db.models import Order, Payment, Ticket
from railbook.domain.fees import departure_at, refund_quote
from railbook.domain.pricing import yuan_text
from railbook.services.after_sale.cancel import expire_unpaid
from railbook.services.after_sale.change import apply_changes
from tests.api.after_sale import (
    assert_error,
    container_of,
    held_order,
    journey,
    make_train,
    member_with,
    sale_day,
    settled,
    sold_out,
)
from tests.support import wait_until


def _in_class(body: dict[str, Any], seat_class: str) -> dict[str, Any]:
    return {**body, "passengers": [{**p, "seat_class": seat_class} for p in body["passengers"]]}


async def _paid(
    client: httpx.AsyncClient, member: dict[str, Any], body: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A paid order of one passenger: (the order, its ticket)."""
    order = await held_order(client, member, body)
    r = await client.post(
        f"/api/v1/orders/{order['order_id']}/pay", json={"method": "mock"}, headers=member["headers"]
    )
    assert r.status_code == 200, r.text
    return r.json(), r.json()["tickets"][0]


async def _change(
    client: httpx.AsyncClient, member: dict[str, Any], ticket_id: str, body: dict[str, Any]
) -> httpx.Response:
    return await client.post(f"/api/v1/tickets/{ticket_id}/change", json=body, headers=member["headers"])


async def _order(client: httpx.AsyncClient, member: dict[str, Any], order_id: str) -> dict[str, Any]:
    r = await client.get(f"/api/v1/orders/{order_id}", headers=member["headers"])
    assert r.status_code == 200, r.text
    return dict(r.json())


async def _applied(client: httpx.AsyncClient, member: dict[str, Any], order_id: str) -> dict[str, Any]:
    """The new order once the change is settled (by the committer, or the after-sale loop)."""

    async def paid() -> dict[str, Any] | None:
        await apply_changes(container_of(client))
        order = await _order(client, member, order_id)
        return order if order["payment_status"] == "PAID" else None

    return await wait_until(paid, timeout=10.0, what="the change to be settled")


async def _money(client: httpx.AsyncClient, member_id: int) -> tuple[int, int, int]:
    """(paid by the member, refunded to them, fares of the tickets they hold paid), in fen; payments of
    the ``change`` provider move a fare from one ticket to another and are not money."""
    async with container_of(client).sessionmaker() as session:
        rows = (
            await session.execute(
                select(Payment.kind, Payment.provider, Payment.amount_fen)
                .join(Order, Order.id == Payment.order_id)
                .where(Order.member_id == member_id)
            )
        ).all()
        held = (
            await session.execute(
                select(Ticket.price_fen).where(Ticket.member_id == member_id, Ticket.status == "PAID")
            )
        ).scalars()
        fares = sum(held)
    paid = sum(a for kind, provider, a in rows if kind == "pay" and provider != "change")
    refunded = sum(a for kind, _, a in rows if kind == "refund")
    return paid, refunded, fares


def _fen(text: str) -> int:
    yuan, _, cents = text.partition(".")
    return int(yuan) * 100 + int(cents or 0)


async def _seat_still_held(client: httpx.AsyncClient, train: dict[str, Any], offset: int, free: int) -> None:
    """Exactly ``free`` second-class seats are left on that day: the next passenger finds it sold out."""
    others = await member_with(client, free + 1)
    if free:
        await held_order(client, others, journey(train, offset, others["passengers"][:free]))
    assert await sold_out(client, others, journey(train, offset, others["passengers"][free:]))


async def test_a_ticket_is_changed_once_and_an_equal_fare_is_paid_at_once(client: httpx.AsyncClient) -> None:
    train = await make_train(client, days=(4, 5, 6))
    member = await member_with(client, 1)
    old_order, ticket = await _paid(client, member, journey(train, 4, member["passengers"]))
    r = await _change(
        client,
        member,
        ticket["ticket_id"],
        {"date": sale_day(5), "train_code": train["code"], "seat_class": "second"},
    )
    assert r.status_code == 202, r.text
    assert r.json()["change_of"] == ticket["ticket_id"] and r.json()["status"] == "PENDING"
    new = await settled(client, member, r.json()["order_id"])
    assert new["status"] == "SUCCESS" and new["total"] == "0.00"
    new = await _applied(client, member, new["order_id"])
    assert new["total"] == "0.00" and [t["status"] for t in new["tickets"]] == ["PAID"]
    assert [t["status"] for t in (await _order(client, member, old_order["order_id"]))["tickets"]] == [
        "CHANGED"
    ]

    again = {"date": sale_day(6), "train_code": train["code"], "seat_class": "second"}
    assert_error(await _change(client, member, new["tickets"][0]["ticket_id"], again), 409, "ALREADY_CHANGED")
    assert_error(await _change(client, member, ticket["ticket_id"], again), 409, "ALREADY_CHANGED")
    assert await _money(client, member["member_id"]) == (9200, 0, 9200)


async def test_a_dearer_seat_owes_the_difference_and_paying_it_completes_the_change(
    client: httpx.AsyncClient,
) -> None:
    train = await make_train(client, days=(4, 5), first_rows=1)
    member = await member_with(client, 1)
    old_order, ticket = await _paid(client, member, journey(train, 4, member["passengers"]))
    r = await _change(
        client,
        member,
        ticket["ticket_id"],
        {"date": sale_day(5), "train_code": train["code"], "seat_class": "first"},
    )
    assert r.status_code == 202, r.text
    new = await settled(client, member, r.json()["order_id"])
    fare = _fen(new["tickets"][0]["price"])
    assert fare > 9200
    assert new["status"] == "SUCCESS" and new["payment_status"] == "UNPAID"
    assert new["total"] == yuan_text(fare - 9200)
    await apply_changes(container_of(client))  # nothing to settle before the difference is paid
    assert (await _order(client, member, old_order["order_id"]))["tickets"][0]["status"] == "PAID"

    r = await client.post(
        f"/api/v1/orders/{new['order_id']}/pay", json={"method": "mock"}, headers=member["headers"]
    )
    assert r.status_code == 200, r.text
    assert r.json()["payment_status"] == "PAID" and r.json()["tickets"][0]["status"] == "PAID"
    again = await client.post(
        f"/api/v1/orders/{new['order_id']}/pay", json={"method": "mock"}, headers=member["headers"]
    )
    assert again.status_code == 200 and again.json()["payment_status"] == "PAID"
    assert (await _order(client, member, old_order["order_id"]))["tickets"][0]["status"] == "CHANGED"
    assert await _money(client, member["member_id"]) == (fare, 0, fare)
    # The old seat is back on sale: the whole second-class carriage of the old day can be sold.
    await _seat_still_held(client, train, 4, free=5)


async def test_a_cheaper_seat_is_paid_at_once_and_the_difference_refunded_less_its_fee(
    client: httpx.AsyncClient,
) -> None:
    train = await make_train(client, days=(4, 5), first_rows=1)
    member = await member_with(client, 1)
    old_order, ticket = await _paid(
        client, member, _in_class(journey(train, 4, member["passengers"]), "first")
    )
    old_fare = _fen(ticket["price"])
    r = await _change(
        client,
        member,
        ticket["ticket_id"],
        {"date": sale_day(5), "train_code": train["code"], "seat_class": "second"},
    )
    assert r.status_code == 202, r.text
    new = await _applied(client, member, r.json()["order_id"])
    assert new["status"] == "SUCCESS" and new["total"] == "0.00"
    difference = old_fare - 9200
    departs = departure_at(dt.date.fromisoformat(sale_day(4)), "08:00")
    quote = refund_quote(difference, departs, dt.datetime.now(dt.UTC))
    assert quote.fee_fen >= 200
    paid, refunded, fares = await _money(client, member["member_id"])
    assert (paid, refunded, fares) == (old_fare, quote.refund_fen, 9200)
    assert paid - refunded == fares + quote.fee_fen

    # The refund of the difference shows where a refund shows: on the old ticket and its order.
    assert new["change_of"] == ticket["ticket_id"]
    assert [(t["refund_amount"], t["fee"]) for t in new["tickets"]] == [(None, None)]
    old = await _order(client, member, old_order["order_id"])
    assert old["payment_status"] == "PARTLY_REFUNDED" and old["change_of"] is None
    refund = (yuan_text(quote.refund_fen), yuan_text(quote.fee_fen))
    assert [(t["status"], t["refund_amount"], t["fee"]) for t in old["tickets"]] == [("CHANGED", *refund)]
    tickets = (await client.get("/api/v1/tickets", headers=member["headers"])).json()
    by_id = {t["ticket_id"]: (t["status"], t["refund_amount"], t["fee"]) for t in tickets}
    assert by_id == {
        ticket["ticket_id"]: ("CHANGED", *refund),
        new["tickets"][0]["ticket_id"]: ("PAID", None, None),
    }


async def test_an_unpaid_dearer_change_expires_and_the_old_ticket_keeps_its_seat(
    client: httpx.AsyncClient,
) -> None:
    train = await make_train(client, days=(4, 5), first_rows=1)
    member = await member_with(client, 1)
    old_order, ticket = await _paid(client, member, journey(train, 4, member["passengers"]))
    r = await _change(
        client,
        member,
        ticket["ticket_id"],
        {"date": sale_day(5), "train_code": train["code"], "seat_class": "first"},
    )
    new = await settled(client, member, r.json()["order_id"])
    assert new["payment_status"] == "UNPAID"
    container = container_of(client)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    async with container.sessionmaker() as session, session.begin():
        await session.execute(update(Order).where(Order.id == new["order_id"]).values(pay_deadline=past))
    assert_error(
        await client.post(
            f"/api/v1/orders/{new['order_id']}/pay", json={"method": "mock"}, headers=member["headers"]
        ),
        409,
        "PAY_DEADLINE_PASSED",
    )
    await expire_unpaid(container)
    await apply_changes(container)
    assert (await _order(client, member, new["order_id"]))["status"] == "CANCEL"
    old = await _order(client, member, old_order["order_id"])
    assert old["tickets"] == old_order["tickets"]  # still PAID, same seat
    assert await _money(client, member["member_id"]) == (9200, 0, 9200)
    await _seat_still_held(client, train, 4, free=4)
    # The change was given up: the ticket can be changed again.
    retry = await _change(
        client,
        member,
        ticket["ticket_id"],
        {"date": sale_day(5), "train_code": train["code"], "seat_class": "second"},
    )
    assert retry.status_code == 202, retry.text


async def test_a_change_to_a_sold_out_train_leaves_the_old_ticket_and_seat_as_they_were(
    client: httpx.AsyncClient,
) -> None:
    train = await make_train(client, days=(4, 5))
    member = await member_with(client, 1)
    old_order, ticket = await _paid(client, member, journey(train, 4, member["passengers"]))
    crowd = await member_with(client, 5)
    await held_order(client, crowd, journey(train, 5, crowd["passengers"]))
    r = await _change(
        client,
        member,
        ticket["ticket_id"],
        {"date": sale_day(5), "train_code": train["code"], "seat_class": "second"},
    )
    if r.status_code == 202:
        assert (await settled(client, member, r.json()["order_id"]))["status"] == "EMPTY"
        await apply_changes(container_of(client))
    else:
        assert_error(r, 409, "SOLD_OUT")
    old = await _order(client, member, old_order["order_id"])
    assert old["tickets"] == old_order["tickets"] and old["payment_status"] == "PAID"
    assert await _money(client, member["member_id"]) == (9200, 0, 9200)
    await _seat_still_held(client, train, 4, free=4)


async def test_to_changes_the_destination_on_the_same_train_only(client: httpx.AsyncClient) -> None:
    train = await make_train(client, days=(4, 5))
    member = await member_with(client, 1)
    old_order, ticket = await _paid(client, member, journey(train, 4, member["passengers"]))
    elsewhere = {
        "date": sale_day(5),
        "train_code": train["code"],
        "seat_class": "second",
        "to": train["stations"][1],
    }
    assert_error(await _change(client, member, ticket["ticket_id"], elsewhere), 422, "VALIDATION_ERROR")
    shorter = {**elsewhere, "date": sale_day(4)}
    r = await _change(client, member, ticket["ticket_id"], shorter)
    assert r.status_code == 202, r.text
    new = await _applied(client, member, r.json()["order_id"])
    assert new["to"] == train["stations"][1] and new["total"] == "0.00"
    assert (await _order(client, member, old_order["order_id"]))["tickets"][0]["status"] == "CHANGED"
    paid, refunded, fares = await _money(client, member["member_id"])
    assert paid == 9200 and fares == _fen(new["tickets"][0]["price"]) and 0 < refunded < 9200 - fares
