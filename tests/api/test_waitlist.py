"""The waitlist (候补) over HTTP on both store configurations (API.md "Orders"): one entry per passenger
and train-day, a deadline, cancelling, and filling in joining order."""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx
from sqlalchemy import update

from railbook.adapters.db.models import Waitlist
from railbook.services.after_sale.waitlist import sweep_waitlists
from tests.api.after_sale import (
    assert_error,
    container_of,
    held_order,
    journey,
    make_train,
    member_with,
    sale_day,
)


async def _sold_out_train(client: httpx.AsyncClient) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A train whose five seats on day 4 are held by five one-passenger orders of one member:
    (the train, [(member, order) ...])."""
    train = await make_train(client)
    crowd = await member_with(client, 5)
    orders = [await held_order(client, crowd, journey(train, 4, [p])) for p in crowd["passengers"]]
    return train, [{"member": crowd, "order": o} for o in orders]


async def _entries(client: httpx.AsyncClient, member: dict[str, Any]) -> list[dict[str, Any]]:
    r = await client.get("/api/v1/waitlist", headers=member["headers"])
    assert r.status_code == 200, r.text
    return list(r.json())


async def _join(client: httpx.AsyncClient, member: dict[str, Any], body: dict[str, Any]) -> httpx.Response:
    return await client.post("/api/v1/waitlist", json=body, headers=member["headers"])


async def _cancel_order(client: httpx.AsyncClient, held: dict[str, Any]) -> None:
    r = await client.post(
        f"/api/v1/orders/{held['order']['order_id']}/cancel", headers=held["member"]["headers"]
    )
    assert r.status_code == 200, r.text


async def test_a_passenger_waits_once_per_train_day_until_the_sale_cutoff(client: httpx.AsyncClient) -> None:
    train, _ = await _sold_out_train(client)
    member = await member_with(client, 2)
    first, second = member["passengers"]
    r = await _join(client, member, journey(train, 4, [first]))
    assert r.status_code == 201, r.text
    assert_error(await _join(client, member, journey(train, 4, [second, first])), 409, "DUPLICATE_ORDER")
    assert (await _join(client, member, journey(train, 4, [second]))).status_code == 201
    entries = await _entries(client, member)
    assert [e["status"] for e in entries] == ["WAITING", "WAITING"]
    # By default an entry waits until the sale closes: 5 minutes before 08:00 Beijing time.
    cutoff = dt.datetime.combine(
        dt.date.fromisoformat(sale_day(4)), dt.time(7, 55), dt.timezone(dt.timedelta(hours=8))
    )
    assert {dt.datetime.fromisoformat(e["deadline"]) for e in entries} == {cutoff}
    entry = entries[-1]
    assert entry["waitlist_id"] == r.json()["waitlist_id"] and entry["order_id"] is None
    assert (entry["train_code"], entry["date"], entry["from"], entry["to"]) == (
        train["code"],
        sale_day(4),
        train["stations"][0],
        train["stations"][2],
    )


async def test_an_entry_expires_at_its_deadline_and_is_not_filled(client: httpx.AsyncClient) -> None:
    train, held = await _sold_out_train(client)
    member = await member_with(client, 1)
    past = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)).isoformat()
    assert_error(
        await _join(client, member, {**journey(train, 4, member["passengers"]), "deadline": past}),
        422,
        "VALIDATION_ERROR",
    )
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    r = await _join(client, member, {**journey(train, 4, member["passengers"]), "deadline": soon.isoformat()})
    assert r.status_code == 201, r.text
    [entry] = await _entries(client, member)
    assert dt.datetime.fromisoformat(entry["deadline"]) == soon

    container = container_of(client)
    async with container.sessionmaker() as session, session.begin():
        await session.execute(
            update(Waitlist)
            .where(Waitlist.id == entry["waitlist_id"])
            .values(deadline=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
        )
    await sweep_waitlists(container)
    [entry] = await _entries(client, member)
    assert (entry["status"], entry["error_code"], entry["order_id"]) == ("EXPIRED", "DEADLINE_PASSED", None)
    await _cancel_order(client, held[0])
    [entry] = await _entries(client, member)
    assert entry["status"] == "EXPIRED" and entry["order_id"] is None
    assert_error(
        await client.delete(f"/api/v1/waitlist/{entry['waitlist_id']}", headers=member["headers"]),
        409,
        "NOT_CANCELLABLE",
    )


async def test_a_cancelled_entry_is_not_filled_and_entries_are_filled_in_joining_order(
    client: httpx.AsyncClient,
) -> None:
    train, held = await _sold_out_train(client)
    early, late, gone = [await member_with(client, 1) for _ in range(3)]
    for m in (gone, early, late):
        assert (await _join(client, m, journey(train, 4, m["passengers"]))).status_code == 201
    [entry] = await _entries(client, gone)
    url = f"/api/v1/waitlist/{entry['waitlist_id']}"
    assert_error(await client.delete(url, headers=early["headers"]), 404, "WAITLIST_NOT_FOUND")
    r = await client.delete(url, headers=gone["headers"])
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "CANCELLED"
    again = await client.delete(url, headers=gone["headers"])
    assert again.status_code == 200 and again.json()["status"] == "CANCELLED"

    await _cancel_order(client, held[0])  # one seat comes back: the earliest waiting entry gets it
    assert [e["status"] for e in await _entries(client, gone)] == ["CANCELLED"]
    assert [e["status"] for e in await _entries(client, early)] == ["FILLED"]
    assert [e["status"] for e in await _entries(client, late)] == ["WAITING"]
    # Cancelled, the passenger no longer waits and may join again.
    assert (await _join(client, gone, journey(train, 4, gone["passengers"]))).status_code == 201
