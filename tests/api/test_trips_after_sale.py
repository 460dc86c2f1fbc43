"""One person, one seat at a time, through refunds and changes (API.md "Orders", "Change rules"), on
both store configurations: a refund gives the passenger's time back, a completed change moves it from
the old journey to the new one, and a change to a train whose sale has closed is TRAIN_DEPARTED."""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx

from tests.api.after_sale import assert_error, container_of, journey, make_train, member_with, sale_day
from tests.api.test_trip_rules import _one_person_two_members, _train_leaving_in
from tests.support import admin, make_train_day, order_body, wait_final, wait_until


async def _paid_ticket(
    client: httpx.AsyncClient, member: dict[str, Any], body: dict[str, Any]
) -> dict[str, Any]:
    """Order, wait for the commit, pay: the paid ticket (with its order's id)."""
    r = await client.post("/api/v1/orders", json=body, headers=member["headers"])
    assert r.status_code == 202, r.text
    order = await wait_final(client, member["headers"], r.json()["order_id"])
    assert order["status"] == "SUCCESS", order
    r = await client.post(
        f"/api/v1/orders/{order['order_id']}/pay", json={"method": "mock"}, headers=member["headers"]
    )
    assert r.status_code == 200, r.text
    return {**r.json()["tickets"][0], "order_id": order["order_id"]}


async def _outcome(client: httpx.AsyncClient, member: dict[str, Any], body: dict[str, Any]) -> str:
    """What an order of ``body`` comes to at once: its refusal's code, or ACCEPTED."""
    r = await client.post("/api/v1/orders", json=body, headers=member["headers"])
    if r.status_code == 202:
        return "ACCEPTED"
    assert r.status_code == 409, r.text
    return str(r.json()["error"]["code"])


async def test_a_refund_gives_the_passenger_s_time_back(client: httpx.AsyncClient) -> None:
    adm = await admin(client)
    first = await make_train_day(client, adm, start_hour=8, days_ahead=4)
    overlapping = await make_train_day(client, adm, start_hour=9, days_ahead=4)
    member = await member_with(client, 1)
    ticket = await _paid_ticket(client, member, order_body(first, member["passengers"]))
    assert await _outcome(client, member, order_body(overlapping, member["passengers"])) == "TRIP_CONFLICT"
    r = await client.post(f"/api/v1/tickets/{ticket['ticket_id']}/refund", headers=member["headers"])
    assert r.status_code == 200, r.text
    refund = (r.json()["refund_amount"], r.json()["fee"])
    # The refund shows on the ticket as the refund answered it, in the order and in the ticket list.
    order = (await client.get(f"/api/v1/orders/{ticket['order_id']}", headers=member["headers"])).json()
    assert order["payment_status"] == "REFUNDED"
    assert [(t["status"], t["refund_amount"], t["fee"]) for t in order["tickets"]] == [("REFUNDED", *refund)]
    (listed,) = (await client.get("/api/v1/tickets", headers=member["headers"])).json()
    assert (listed["status"], listed["refund_amount"], listed["fee"]) == ("REFUNDED", *refund)
    assert await _outcome(client, member, order_body(overlapping, member["passengers"])) == "ACCEPTED"


async def test_a_refund_by_one_member_frees_the_person_for_another(client: httpx.AsyncClient) -> None:
    """Two members list one person (one ID number): A's paid ticket refuses B's order of that person
    on an overlapping train, until A refunds it."""
    adm = await admin(client)
    first = await make_train_day(client, adm, start_hour=8, days_ahead=4)
    overlapping = await make_train_day(client, adm, start_hour=9, days_ahead=4)
    s = await _one_person_two_members(client)
    ticket = await _paid_ticket(client, s.a, order_body(first, [s.pa]))
    r = await client.post("/api/v1/orders", json=order_body(overlapping, [s.pb]), headers=s.b["headers"])
    assert_error(r, 409, "TRIP_CONFLICT")
    assert r.json()["error"]["details"]["passenger_id"] == s.pb
    r = await client.post(f"/api/v1/tickets/{ticket['ticket_id']}/refund", headers=s.a["headers"])
    assert r.status_code == 200, r.text
    assert await _outcome(client, s.b, order_body(overlapping, [s.pb])) == "ACCEPTED"


async def test_a_completed_change_moves_the_trip(client: httpx.AsyncClient) -> None:
    """A ticket on day 4 changed to day 5 of the same train: once the change holds, day 4's time is
    free for the passenger, and day 5's is taken."""
    train = await make_train(client, days=(4, 5), rows=2)
    adm = await admin(client)
    day4_other = await make_train_day(client, adm, start_hour=8, days_ahead=4)  # overlaps day 4's trip
    day5_other = await make_train_day(client, adm, start_hour=8, days_ahead=5)  # overlaps day 5's trip
    member = await member_with(client, 1)
    riders = member["passengers"]
    ticket = await _paid_ticket(client, member, journey(train, 4, riders))
    assert await _outcome(client, member, order_body(day4_other, riders)) == "TRIP_CONFLICT"
    r = await client.post("/api/v1/orders", json=order_body(day5_other, riders), headers=member["headers"])
    assert r.status_code == 202, r.text
    # That order holds day 5's time until it is cancelled: then the change may take it.
    blocking = r.json()["order_id"]
    await wait_final(client, member["headers"], blocking)
    r = await client.post(f"/api/v1/orders/{blocking}/cancel", headers=member["headers"])
    assert r.status_code == 200, r.text

    r = await client.post(
        f"/api/v1/tickets/{ticket['ticket_id']}/change",
        json={"date": sale_day(5), "train_code": train["code"], "seat_class": "second"},
        headers=member["headers"],
    )
    assert r.status_code == 202, r.text
    new_id = r.json()["order_id"]

    async def changed() -> bool:
        from railbook.services.after_sale.change import apply_changes

        await apply_changes(container_of(client))
        r = await client.get(f"/api/v1/orders/{new_id}", headers=member["headers"])
        return r.json()["payment_status"] == "PAID"

    await wait_until(changed, what="the change to be settled")
    assert await _outcome(client, member, order_body(day5_other, riders)) == "TRIP_CONFLICT"

    # Day 4's trip is given back by whichever settle committed the change (this call, or the app's
    # background worker), moments after its commit: a trip claimed this recently refuses until then.
    async def day4_free() -> bool:
        return await _outcome(client, member, order_body(day4_other, riders)) == "ACCEPTED"

    await wait_until(day4_free, what="day 4's time to be free")


async def test_a_change_to_a_train_whose_sale_has_closed_is_train_departed(client: httpx.AsyncClient) -> None:
    soon = await _train_leaving_in(client, 3)
    later = (dt.date.fromisoformat(soon["date"]) + dt.timedelta(days=3)).isoformat()
    r = await client.post("/api/v1/admin/sales/open", json={"date": later}, headers=await admin(client))
    assert r.status_code == 200, r.text
    member = await member_with(client, 1)
    ticket = await _paid_ticket(client, member, {**order_body(soon, member["passengers"]), "date": later})
    r = await client.post(
        f"/api/v1/tickets/{ticket['ticket_id']}/change",
        json={"date": soon["date"], "train_code": soon["train_code"], "seat_class": "second"},
        headers=member["headers"],
    )
    assert_error(r, 409, "TRAIN_DEPARTED")
    tickets = (await client.get("/api/v1/tickets", headers=member["headers"])).json()
    assert [(t["ticket_id"], t["status"]) for t in tickets] == [(ticket["ticket_id"], "PAID")]
