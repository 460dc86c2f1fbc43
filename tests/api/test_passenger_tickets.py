"""A passenger who holds tickets for a journey not yet made cannot be removed (API.md "Members"), on
both store configurations."""

from __future__ import annotations

import datetime as dt

import httpx
from sqlalchemy import select, update

from railbook.adapters.db.models import DailyTrainStop, Order
from railbook.kit.clock import beijing_today
from tests.api.after_sale import assert_error, container_of, held_order, journey, make_train, member_with


async def test_a_passenger_with_an_unpaid_or_paid_ticket_ahead_cannot_be_deleted(
    client: httpx.AsyncClient,
) -> None:
    train = await make_train(client)
    member = await member_with(client, 2)
    travelling, idle = member["passengers"]
    order = await held_order(client, member, journey(train, 4, [travelling]))
    url = f"/api/v1/passengers/{travelling}"
    assert_error(await client.delete(url, headers=member["headers"]), 409, "PASSENGER_HAS_TICKETS")
    r = await client.post(
        f"/api/v1/orders/{order['order_id']}/pay", json={"method": "mock"}, headers=member["headers"]
    )
    assert r.status_code == 200, r.text
    assert_error(await client.delete(url, headers=member["headers"]), 409, "PASSENGER_HAS_TICKETS")
    listed = (await client.get("/api/v1/passengers", headers=member["headers"])).json()
    assert travelling in [p["passenger_id"] for p in listed]

    assert (await client.delete(f"/api/v1/passengers/{idle}", headers=member["headers"])).status_code == 204
    r = await client.post(
        f"/api/v1/tickets/{order['tickets'][0]['ticket_id']}/refund", headers=member["headers"]
    )
    assert r.status_code == 200, r.text
    assert (await client.delete(url, headers=member["headers"])).status_code == 204


async def test_a_journey_already_made_does_not_keep_the_passenger(client: httpx.AsyncClient) -> None:
    train = await make_train(client)
    member = await member_with(client, 1)
    order = await held_order(client, member, journey(train, 4, member["passengers"]))
    await client.post(
        f"/api/v1/orders/{order['order_id']}/pay", json={"method": "mock"}, headers=member["headers"]
    )
    async with container_of(client).sessionmaker() as session, session.begin():
        # The journey ended three days ago: its train-day's stops moved three days earlier (the order
        # itself cannot change its date: its tickets and seats are of that date, by key).
        daily_id, date = (
            await session.execute(
                select(Order.daily_train_id, Order.service_date).where(Order.id == order["order_id"])
            )
        ).one()
        earlier = (date - (beijing_today() - dt.timedelta(days=3))).days
        await session.execute(
            update(DailyTrainStop)
            .where(DailyTrainStop.daily_train_id == daily_id)
            .values(day=DailyTrainStop.day - earlier)
        )
    r = await client.delete(f"/api/v1/passengers/{member['passengers'][0]}", headers=member["headers"])
    assert r.status_code == 204, r.text
