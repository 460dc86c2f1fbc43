"""Trains, members and orders for the after-sale API tests (pay, cancel, refund, change, waitlist)
and the read-model tests that follow an order through them."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

import httpx

from railbook.domain.identity import compose_id_card
from railbook.kit.clock import beijing_today
from tests.naming import station_code, train_code
from tests.support import admin, register, unique, wait_final

_ids = itertools.count(1)


def sale_day(offset: int) -> str:
    return (beijing_today() + dt.timedelta(days=offset)).isoformat()


async def make_train(
    client: httpx.AsyncClient, *, days: tuple[int, ...] = (4,), rows: int = 1, first_rows: int = 0
) -> dict[str, Any]:
    """A 3-stop G train (200 km, one second-class carriage of ``rows`` rows: 5 seats a row; with
    ``first_rows``, a first-class carriage too: 4 seats a row) on sale on the given days from today."""
    admin_auth = await admin(client)
    names = []
    for _ in range(3):
        name = f"站{unique()}"
        r = await client.post(
            "/api/v1/admin/stations", json={"name": name, "code": station_code()}, headers=admin_auth
        )
        assert r.status_code == 201, r.text
        names.append(name)
    code = train_code("G")
    train = {
        "code": code,
        "kind": "G",
        "stops": [
            {"station": names[0], "departs": "08:00", "km": 0},
            {"station": names[1], "arrives": "09:00", "departs": "09:02", "km": 100},
            {"station": names[2], "arrives": "10:00", "km": 200},
        ],
        "carriages": [{"carriage": 1, "seat_class": "second", "rows": rows}]
        + ([{"carriage": 2, "seat_class": "first", "rows": first_rows}] if first_rows else []),
    }
    r = await client.post("/api/v1/admin/trains", json=train, headers=admin_auth)
    assert r.status_code == 201, r.text
    for offset in days:
        r = await client.post("/api/v1/admin/sales/open", json={"date": sale_day(offset)}, headers=admin_auth)
        assert r.status_code == 200, r.text
    return {"code": code, "stations": names}


async def member_with(client: httpx.AsyncClient, n: int) -> dict[str, Any]:
    """A logged-in member with ``n`` passengers."""
    member = await register(client)
    member["passengers"] = []
    for _ in range(n):
        k = next(_ids)
        card = compose_id_card("110105", dt.date(1985, 1, 1) + dt.timedelta(days=k // 1000), k % 1000)
        r = await client.post(
            "/api/v1/passengers",
            json={"name": "王五", "id_card": card, "type": "adult"},
            headers=member["headers"],
        )
        assert r.status_code == 201, r.text
        member["passengers"].append(r.json()["passenger_id"])
    return member


def journey(train: dict[str, Any], offset: int, passengers: list[int]) -> dict[str, Any]:
    return {
        "date": sale_day(offset),
        "train_code": train["code"],
        "from": train["stations"][0],
        "to": train["stations"][2],
        "passengers": [{"passenger_id": p, "seat_class": "second"} for p in passengers],
    }


async def place(client: httpx.AsyncClient, member: dict[str, Any], body: dict[str, Any]) -> httpx.Response:
    return await client.post("/api/v1/orders", json=body, headers=member["headers"])


async def settled(client: httpx.AsyncClient, member: dict[str, Any], order_id: str) -> dict[str, Any]:
    """The order once the committer has answered (it leaves PENDING within a moment)."""
    return await wait_final(client, member["headers"], order_id)


async def held_order(
    client: httpx.AsyncClient, member: dict[str, Any], body: dict[str, Any]
) -> dict[str, Any]:
    r = await place(client, member, body)
    assert r.status_code == 202, r.text
    order = await settled(client, member, r.json()["order_id"])
    assert order["status"] == "SUCCESS", order
    assert order["payment_status"] == "UNPAID"
    return order


async def sold_out(client: httpx.AsyncClient, member: dict[str, Any], body: dict[str, Any]) -> bool:
    r = await place(client, member, body)
    if r.status_code == 409:
        assert r.json()["error"]["code"] == "SOLD_OUT", r.text
        return True
    assert r.status_code == 202, r.text
    return (await settled(client, member, r.json()["order_id"]))["status"] == "EMPTY"


def container_of(client: httpx.AsyncClient) -> Any:
    return client.app.state.container  # type: ignore[attr-defined]


def assert_error(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code, r.text
