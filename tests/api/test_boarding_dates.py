"""Orders, tickets and waitlist entries are shown under the passenger's boarding date (API.md): a
train that leaves its origin on D−1 and reaches ``from`` after midnight is shown under D, whichever
way the view is read (queued, committed, cached, a list page, the member's tickets)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx

from railbook.kit.clock import beijing_today
from tests.api.test_search_rules import _open, _stations, _stop, _train
from tests.support import add_passenger, admin, register, wait_final, wait_until


async def _overnight(client: httpx.AsyncClient, rows: int = 2) -> dict[str, Any]:
    """Origin 23:00 on S, b at 01:15 on S+1, c at 03:00 on S+1; on sale on S."""
    headers = await admin(client)
    a, b, c = await _stations(client, headers, 3)
    code = await _train(
        client,
        headers,
        [
            _stop(a, 0, departs="23:00"),
            _stop(b, 150, arrives="01:10", departs="01:15", day=1),
            _stop(c, 400, arrives="03:00", day=1),
        ],
        rows=rows,
    )
    service = beijing_today() + dt.timedelta(days=2)
    await _open(client, headers, service)
    boarding = service + dt.timedelta(days=1)
    return {"code": code, "stations": (a, b, c), "service": service, "boarding": boarding}


def _body(train: dict[str, Any], frm: str, to: str, date: dt.date, pids: list[int]) -> dict[str, Any]:
    return {
        "date": date.isoformat(),
        "train_code": train["code"],
        "from": frm,
        "to": to,
        "passengers": [{"passenger_id": p, "seat_class": "second"} for p in pids],
    }


async def test_orders_and_tickets_show_the_boarding_date(client: httpx.AsyncClient) -> None:
    train = await _overnight(client)
    a, b, c = train["stations"]
    boarding, service = train["boarding"].isoformat(), train["service"].isoformat()
    member = await register(client)
    h = member["headers"]
    p, q = await add_passenger(client, h), await add_passenger(client, h)
    r = await client.post("/api/v1/orders", json=_body(train, b, c, train["boarding"], [p]), headers=h)
    assert r.status_code == 202, r.text
    late = r.json()["order_id"]
    queued = await client.get(f"/api/v1/orders/{late}", headers=h)  # queued or already committed
    assert queued.json()["date"] == boarding, queued.json()
    # From the origin the same train is the service day's: shown under S.
    r = await client.post("/api/v1/orders", json=_body(train, a, c, train["service"], [q]), headers=h)
    assert r.status_code == 202, r.text
    early = r.json()["order_id"]

    for _ in range(2):  # committed: from the database, then from the view cache
        assert (await wait_final(client, h, late))["date"] == boarding
        assert (await wait_final(client, h, early))["date"] == service
    for _ in range(2):
        page = (await client.get("/api/v1/orders", headers=h)).json()["items"]
        assert {o["order_id"]: o["date"] for o in page} == {late: boarding, early: service}
        tickets = (await client.get("/api/v1/tickets", headers=h)).json()
        assert {t["order_id"]: t["date"] for t in tickets} == {late: boarding, early: service}


async def test_waitlist_entries_show_the_boarding_date(client: httpx.AsyncClient) -> None:
    train = await _overnight(client, rows=1)
    _, b, c = train["stations"]
    crowd = await register(client)
    riders = [await add_passenger(client, crowd["headers"]) for _ in range(5)]  # one row of five seats
    r = await client.post(
        "/api/v1/orders", json=_body(train, b, c, train["boarding"], riders), headers=crowd["headers"]
    )
    assert r.status_code == 202, r.text
    assert (await wait_final(client, crowd["headers"], r.json()["order_id"]))["status"] == "SUCCESS"

    member = await register(client)
    h = member["headers"]
    p = await add_passenger(client, h)

    async def joined() -> httpx.Response | None:
        r = await client.post("/api/v1/waitlist", json=_body(train, b, c, train["boarding"], [p]), headers=h)
        return r if r.status_code != 409 or r.json()["error"]["code"] != "NOT_SOLD_OUT" else None

    r = await wait_until(joined, what="the sold-out journey to be waited for")
    assert r.status_code == 201, r.text
    waitlist_id = r.json()["waitlist_id"]
    (entry,) = (await client.get("/api/v1/waitlist", headers=h)).json()
    assert entry["waitlist_id"] == waitlist_id and entry["date"] == train["boarding"].isoformat(), entry
    r = await client.delete(f"/api/v1/waitlist/{waitlist_id}", headers=h)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "CANCELLED" and r.json()["date"] == train["boarding"].isoformat()
