"""After the order is committed, over HTTP on both store configurations: pay, cancel, expiry, refund,
change, waitlist and the signed payment callback (API.md "Orders")."""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx
from sqlalchemy import select, update

from railbook.adapters.db.models import Order, Payment, Ticket
from railbook.adapters.payment.mock import MockProvider
from railbook.services.after_sale.cancel import expire_unpaid
from railbook.services.after_sale.change import apply_changes
from railbook.services.after_sale.payment import callback_payload
from railbook.services.booking.order_ids import issue_order_id
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
from tests.support import register, unique, wait_until

# --------------------------------------------------------------------------------------------


async def test_pay_marks_order_and_tickets_paid_and_paying_again_answers_the_same(
    client: httpx.AsyncClient,
) -> None:
    train = await make_train(client)
    member = await member_with(client, 2)
    order = await held_order(client, member, journey(train, 4, member["passengers"]))
    url = f"/api/v1/orders/{order['order_id']}/pay"
    headers = {**member["headers"], "Idempotency-Key": unique("pay-")}
    first = await client.post(url, json={"method": "mock"}, headers=headers)
    assert first.status_code == 200, first.text
    paid = first.json()
    assert paid["payment_status"] == "PAID" and paid["status"] == "SUCCESS"
    assert [t["status"] for t in paid["tickets"]] == ["PAID", "PAID"]
    again = await client.post(url, json={"method": "mock"}, headers=headers)
    assert again.status_code == 200 and again.json() == paid
    plain = await client.post(url, json={"method": "mock"}, headers=member["headers"])
    assert plain.status_code == 200 and plain.json() == paid
    async with container_of(client).sessionmaker() as session:
        payments = (
            (
                await session.execute(
                    select(Payment).where(Payment.order_id == order["order_id"], Payment.kind == "pay")
                )
            )
            .scalars()
            .all()
        )
    assert len(payments) == 1
    assert payments[0].idempotency_key == headers["Idempotency-Key"]
    assert payments[0].amount_fen == 2 * 9200


async def test_someone_elses_order_or_ticket_is_not_found(client: httpx.AsyncClient) -> None:
    train = await make_train(client)
    owner = await member_with(client, 1)
    order = await held_order(client, owner, journey(train, 4, owner["passengers"]))
    other = await register(client)
    oid = order["order_id"]
    for path in (f"/api/v1/orders/{oid}/pay", f"/api/v1/orders/{oid}/cancel"):
        assert_error(
            await client.post(
                path, json={"method": "mock"} if path.endswith("pay") else None, headers=other["headers"]
            ),
            404,
            "ORDER_NOT_FOUND",
        )
    tid = order["tickets"][0]["ticket_id"]
    assert_error(
        await client.post(f"/api/v1/tickets/{tid}/refund", headers=other["headers"]), 404, "TICKET_NOT_FOUND"
    )
    r = await client.post(f"/api/v1/orders/{oid}/pay", json={"method": "mock"})
    assert r.status_code == 401


async def test_an_order_not_committed_yet_is_not_payable_nor_cancellable(client: httpx.AsyncClient) -> None:
    """An id issued to the member whose order the database does not hold yet (still in the queue): the
    order can be read back, so paying or cancelling it is a 409, not a 404; for anyone else, 404."""
    owner = await register(client)
    other = await register(client)
    oid = issue_order_id(container_of(client).jwt_secret, owner["member_id"])
    pay, cancel = f"/api/v1/orders/{oid}/pay", f"/api/v1/orders/{oid}/cancel"
    assert_error(
        await client.post(pay, json={"method": "mock"}, headers=owner["headers"]), 409, "NOT_PAYABLE"
    )
    assert_error(await client.post(cancel, headers=owner["headers"]), 409, "NOT_CANCELLABLE")
    assert_error(
        await client.post(pay, json={"method": "mock"}, headers=other["headers"]), 404, "ORDER_NOT_FOUND"
    )
    assert_error(await client.post(cancel, headers=other["headers"]), 404, "ORDER_NOT_FOUND")


async def test_payment_after_the_deadline_is_refused_and_expiry_puts_the_seats_back(
    client: httpx.AsyncClient,
) -> None:
    train = await make_train(client)
    first = await member_with(client, 5)
    order = await held_order(client, first, journey(train, 4, first["passengers"]))
    second = await member_with(client, 1)
    assert await sold_out(client, second, journey(train, 4, second["passengers"]))

    container = container_of(client)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    async with container.sessionmaker() as session, session.begin():
        await session.execute(update(Order).where(Order.id == order["order_id"]).values(pay_deadline=past))
    r = await client.post(
        f"/api/v1/orders/{order['order_id']}/pay", json={"method": "mock"}, headers=first["headers"]
    )
    assert_error(r, 409, "PAY_DEADLINE_PASSED")

    await expire_unpaid(container)  # the background loop may have done it already: either way
    r = await client.get(f"/api/v1/orders/{order['order_id']}", headers=first["headers"])
    assert r.json()["status"] == "CANCEL" and r.json()["payment_status"] == "UNPAID"
    assert {t["status"] for t in r.json()["tickets"]} == {"CANCELLED"}
    async with container.sessionmaker() as session:
        released = (
            await session.execute(select(Order.released_at).where(Order.id == order["order_id"]))
        ).scalar_one()
    assert released is not None
    assert_error(
        await client.post(
            f"/api/v1/orders/{order['order_id']}/pay", json={"method": "mock"}, headers=first["headers"]
        ),
        409,
        "PAY_DEADLINE_PASSED",
    )
    later = await held_order(client, second, journey(train, 4, second["passengers"]))
    assert later["tickets"][0]["seat"].startswith("01-01")


async def test_cancel_puts_the_seats_back_on_sale(client: httpx.AsyncClient) -> None:
    train = await make_train(client)
    first = await member_with(client, 5)
    order = await held_order(client, first, journey(train, 4, first["passengers"]))
    second = await member_with(client, 2)
    assert await sold_out(client, second, journey(train, 4, second["passengers"]))
    r = await client.post(f"/api/v1/orders/{order['order_id']}/cancel", headers=first["headers"])
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "CANCEL"
    assert {t["status"] for t in r.json()["tickets"]} == {"CANCELLED"}
    again = await client.post(f"/api/v1/orders/{order['order_id']}/cancel", headers=first["headers"])
    assert again.status_code == 200 and again.json()["status"] == "CANCEL"
    assert_error(
        await client.post(
            f"/api/v1/orders/{order['order_id']}/pay", json={"method": "mock"}, headers=first["headers"]
        ),
        409,
        "NOT_PAYABLE",
    )
    await held_order(client, second, journey(train, 4, second["passengers"]))


async def test_a_paid_order_cannot_be_cancelled(client: httpx.AsyncClient) -> None:
    train = await make_train(client)
    member = await member_with(client, 1)
    order = await held_order(client, member, journey(train, 4, member["passengers"]))
    r = await client.post(
        f"/api/v1/orders/{order['order_id']}/pay", json={"method": "mock"}, headers=member["headers"]
    )
    assert r.status_code == 200
    assert_error(
        await client.post(f"/api/v1/orders/{order['order_id']}/cancel", headers=member["headers"]),
        409,
        "NOT_CANCELLABLE",
    )


async def test_refund_charges_the_fee_of_its_band_and_puts_that_seat_back(client: httpx.AsyncClient) -> None:
    # Departure 4 days ahead (08:00 Beijing): between 48 hours and 8 days before, so 5 %.
    train = await make_train(client, days=(4, 10))
    first = await member_with(client, 5)
    order = await held_order(client, first, journey(train, 4, first["passengers"]))
    assert (
        await client.post(
            f"/api/v1/orders/{order['order_id']}/pay", json={"method": "mock"}, headers=first["headers"]
        )
    ).status_code == 200
    second = await member_with(client, 1)
    assert await sold_out(client, second, journey(train, 4, second["passengers"]))

    ticket = order["tickets"][0]
    assert_error(
        await client.post(
            f"/api/v1/tickets/{ticket['ticket_id']}/change",
            json={"date": "not-a-date", "train_code": train["code"], "seat_class": "second"},
            headers=first["headers"],
        ),
        422,
        "VALIDATION_ERROR",
    )
    r = await client.post(f"/api/v1/tickets/{ticket['ticket_id']}/refund", headers=first["headers"])
    assert r.status_code == 200, r.text
    assert r.json() == {"ticket_id": ticket["ticket_id"], "refund_amount": "87.50", "fee": "4.50"}
    again = await client.post(f"/api/v1/tickets/{ticket['ticket_id']}/refund", headers=first["headers"])
    assert again.status_code == 200 and again.json() == r.json()

    view = (await client.get(f"/api/v1/orders/{order['order_id']}", headers=first["headers"])).json()
    assert view["payment_status"] == "PARTLY_REFUNDED"
    assert sorted(t["status"] for t in view["tickets"]) == ["PAID"] * 4 + ["REFUNDED"]
    later = await held_order(client, second, journey(train, 4, second["passengers"]))
    assert later["tickets"][0]["seat"] == ticket["seat"]

    # Ten days ahead: free.
    third = await member_with(client, 1)
    far = await held_order(client, third, journey(train, 10, third["passengers"]))
    await client.post(
        f"/api/v1/orders/{far['order_id']}/pay", json={"method": "mock"}, headers=third["headers"]
    )
    r = await client.post(
        f"/api/v1/tickets/{far['tickets'][0]['ticket_id']}/refund", headers=third["headers"]
    )
    assert r.json()["fee"] == "0.00" and r.json()["refund_amount"] == "92.00"
    view = (await client.get(f"/api/v1/orders/{far['order_id']}", headers=third["headers"])).json()
    assert view["payment_status"] == "REFUNDED"


async def test_an_unpaid_ticket_cannot_be_refunded(client: httpx.AsyncClient) -> None:
    train = await make_train(client)
    member = await member_with(client, 1)
    order = await held_order(client, member, journey(train, 4, member["passengers"]))
    assert_error(
        await client.post(
            f"/api/v1/tickets/{order['tickets'][0]['ticket_id']}/refund", headers=member["headers"]
        ),
        409,
        "NOT_REFUNDABLE",
    )


async def test_change_makes_the_old_ticket_changed_once_the_new_order_holds(
    client: httpx.AsyncClient,
) -> None:
    train = await make_train(client, days=(4, 5))
    member = await member_with(client, 1)
    order = await held_order(client, member, journey(train, 4, member["passengers"]))
    await client.post(
        f"/api/v1/orders/{order['order_id']}/pay", json={"method": "mock"}, headers=member["headers"]
    )
    ticket = order["tickets"][0]
    r = await client.post(
        f"/api/v1/tickets/{ticket['ticket_id']}/change",
        json={"date": sale_day(5), "train_code": train["code"], "seat_class": "second"},
        headers=member["headers"],
    )
    assert r.status_code == 202, r.text
    new_id = r.json()["order_id"]
    again = await client.post(
        f"/api/v1/tickets/{ticket['ticket_id']}/change",
        json={"date": sale_day(5), "train_code": train["code"], "seat_class": "second"},
        headers=member["headers"],
    )
    # In progress, or already done: an equal fare is settled as soon as the new order holds.
    assert again.status_code == 409 and again.json()["error"]["code"] in (
        "CHANGE_IN_PROGRESS",
        "ALREADY_CHANGED",
    ), again.text
    new = await settled(client, member, new_id)
    assert new["status"] == "SUCCESS"

    async def paid() -> dict[str, Any] | None:
        # Applied here or by the background loop (which may hold the row right now).
        await apply_changes(container_of(client))
        order = (await client.get(f"/api/v1/orders/{new_id}", headers=member["headers"])).json()
        return dict(order) if order["payment_status"] == "PAID" else None

    new = await wait_until(paid, timeout=15.0, what="the change to be applied")
    assert new["date"] == sale_day(5)
    assert [t["status"] for t in new["tickets"]] == ["PAID"]
    old = (await client.get(f"/api/v1/orders/{order['order_id']}", headers=member["headers"])).json()
    assert [t["status"] for t in old["tickets"]] == ["CHANGED"]

    async def released() -> dt.datetime | None:
        # The old seat goes back right after the change's commit (by whoever applied it).
        async with container_of(client).sessionmaker() as session:
            at: dt.datetime | None = (
                await session.execute(select(Ticket.released_at).where(Ticket.id == ticket["ticket_id"]))
            ).scalar_one()
        return at

    await wait_until(released, timeout=15.0, what="the old seat to be confirmed back")
    # The old seat is back on sale: the whole carriage can be booked on the old day again.
    other = await member_with(client, 5)
    await held_order(client, other, journey(train, 4, other["passengers"]))
    assert_error(
        await client.post(f"/api/v1/tickets/{ticket['ticket_id']}/refund", headers=member["headers"]),
        409,
        "NOT_REFUNDABLE",
    )


async def test_waitlist_is_filled_when_a_cancel_returns_seats(client: httpx.AsyncClient) -> None:
    train = await make_train(client)
    first = await member_with(client, 5)
    waiting = await member_with(client, 1)
    body = journey(train, 4, waiting["passengers"])
    assert_error(
        await client.post("/api/v1/waitlist", json=body, headers=waiting["headers"]), 409, "NOT_SOLD_OUT"
    )
    order = await held_order(client, first, journey(train, 4, first["passengers"]))
    r = await client.post("/api/v1/waitlist", json=body, headers=waiting["headers"])
    assert r.status_code == 201, r.text
    waitlist_id = r.json()["waitlist_id"]
    entries = (await client.get("/api/v1/waitlist", headers=waiting["headers"])).json()
    assert [(e["waitlist_id"], e["status"]) for e in entries] == [(waitlist_id, "WAITING")]
    assert (await client.get("/api/v1/waitlist", headers=first["headers"])).json() == []

    r = await client.post(f"/api/v1/orders/{order['order_id']}/cancel", headers=first["headers"])
    assert r.status_code == 200

    async def filled_entries() -> list[dict[str, Any]] | None:
        # The cancel serves the waitlist at once; a fill cut short (a busy store) is retried by the
        # background sweep.
        got: list[dict[str, Any]] = (await client.get("/api/v1/waitlist", headers=waiting["headers"])).json()
        return got if got[0]["status"] == "FILLED" else None

    entries = await wait_until(filled_entries, timeout=30.0, interval=0.2, what="the waitlist entry filled")
    filled = await settled(client, waiting, entries[0]["order_id"])
    assert filled["status"] == "SUCCESS" and filled["tickets"][0]["passenger_id"] == waiting["passengers"][0]


async def test_callback_with_a_bad_signature_changes_nothing_and_a_replay_is_ignored(
    client: httpx.AsyncClient,
) -> None:
    train = await make_train(client)
    member = await member_with(client, 1)
    order = await held_order(client, member, journey(train, 4, member["passengers"]))
    provider = MockProvider(container_of(client).jwt_secret)
    payload = callback_payload(order_id=order["order_id"], provider_ref=unique("ref-"), amount_fen=9200)
    good = {**payload, "signature": provider.sign(payload)}

    forged = {**good, "signature": MockProvider("another-secret").sign(payload)}
    assert_error(await client.post("/api/v1/payments/mock/callback", json=forged), 400, "BAD_SIGNATURE")
    tampered = {**good, "amount_fen": 1}
    assert_error(await client.post("/api/v1/payments/mock/callback", json=tampered), 400, "BAD_SIGNATURE")
    view = (await client.get(f"/api/v1/orders/{order['order_id']}", headers=member["headers"])).json()
    assert view["payment_status"] == "UNPAID"

    r = await client.post("/api/v1/payments/mock/callback", json=good)
    assert r.status_code == 200 and r.json() == {"order_id": order["order_id"], "applied": True}
    replay = await client.post("/api/v1/payments/mock/callback", json=good)
    assert replay.status_code == 200 and replay.json() == {"order_id": order["order_id"], "applied": False}
    view = (await client.get(f"/api/v1/orders/{order['order_id']}", headers=member["headers"])).json()
    assert view["payment_status"] == "PAID"
    async with container_of(client).sessionmaker() as session:
        count = len(
            (await session.execute(select(Payment.id).where(Payment.order_id == order["order_id"]))).all()
        )
    assert count == 1
