"""Admin endpoints over HTTP, on both configurations: auth, 201/409/422 families, sales and inventory."""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

import httpx

from railbook.kit.clock import beijing_today
from tests.naming import station_code, train_code
from tests.support import register, unique

_rng = random.Random()


async def _station(client: httpx.AsyncClient, headers: dict[str, str], name: str) -> dict[str, Any]:
    for _ in range(50):
        code = station_code()
        r = await client.post(
            "/api/v1/admin/stations",
            headers=headers,
            json={"name": name, "code": code, "pinyin": "ceshi" + code.lower()},
        )
        if r.status_code == 201:
            return dict(r.json())
        assert r.status_code == 409, r.text
        assert r.json()["error"]["code"] == "STATION_EXISTS"
    raise AssertionError("no free station code")


async def _train_body(client: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, Any]:
    tag = unique()
    a = await _station(client, headers, f"东{tag}")
    b = await _station(client, headers, f"西{tag}")
    c = await _station(client, headers, f"南{tag}")
    return {
        "code": train_code("D"),
        "kind": "D",
        "stops": [
            {"station": a["name"], "departs": "09:00", "km": 0},
            {"station": b["code"], "arrives": "10:22", "departs": "10:24", "km": 406},
            {"station": c["name"], "arrives": "13:28", "km": 1318},
        ],
        "carriages": [
            {"carriage": 1, "seat_class": "first", "rows": 2},
            {"carriage": 2, "seat_class": "second", "rows": 3},
        ],
    }


async def test_admin_endpoints_need_an_admin(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/v1/admin/stations")
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "UNAUTHORIZED"
    member = await register(client)
    for method, path in [
        ("GET", "/api/v1/admin/stations"),
        ("POST", "/api/v1/admin/trains"),
        ("GET", "/api/v1/admin/trains/G1"),
        ("POST", "/api/v1/admin/sales/open"),
    ]:
        r = await client.request(method, path, headers=member["headers"], json={})
        assert r.status_code == 404, (path, r.text)
        assert r.json()["error"]["code"] == "NOT_FOUND"


async def test_stations_create_list_conflict(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    name = f"测试{unique()}"
    made = await _station(client, admin_headers, name)
    assert set(made) >= {"station_id", "name", "code"}
    again = await client.post(
        "/api/v1/admin/stations", headers=admin_headers, json={"name": name, "code": "ZZZ"}
    )
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "STATION_EXISTS"
    for q in (name[:4], made["code"], made["pinyin"][:7]):
        found = await client.get("/api/v1/admin/stations", params={"q": q}, headers=admin_headers)
        assert found.status_code == 200
        assert made["code"] in [s["code"] for s in found.json()], q
    # LIKE wildcards in q are literal characters, not patterns.
    wild = await client.get("/api/v1/admin/stations", params={"q": "%"}, headers=admin_headers)
    assert wild.status_code == 200 and wild.json() == []


async def test_bad_stations_are_422(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> None:
    for body in (
        {"name": "好", "code": "ab1"},
        {"name": "", "code": "ABC"},
        {"name": "x" * 33, "code": "ABC"},
        {"name": "坏\x00名", "code": "ABC"},
        {"name": "好", "code": "ABC", "extra": 1},
        {"code": "ABC"},
    ):
        r = await client.post("/api/v1/admin/stations", headers=admin_headers, json=body)
        assert r.status_code == 422, body
        assert r.json()["error"]["code"] == "VALIDATION_ERROR"


async def test_sql_looking_names_are_stored_verbatim(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    name = f"x');DROP TABLE train;--{unique()}"[:32]
    made = await _station(client, admin_headers, name)
    assert made["name"] == name
    found = await client.get("/api/v1/admin/stations", params={"q": name}, headers=admin_headers)
    assert [s["name"] for s in found.json()] == [name]


async def test_train_lifecycle(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> None:
    body = await _train_body(client, admin_headers)
    r = await client.post("/api/v1/admin/trains", headers=admin_headers, json=body)
    assert r.status_code == 201, r.text
    train = r.json()
    assert train["code"] == body["code"]
    assert train["seats"] == {"first": 8, "second": 15}
    assert [s["km"] for s in train["stops"]] == [0, 406, 1318]
    assert "arrives" not in train["stops"][0] and "departs" not in train["stops"][-1]
    assert train["stops"][1]["station_code"] == body["stops"][1]["station"]

    dup = await client.post("/api/v1/admin/trains", headers=admin_headers, json=body)
    assert dup.status_code == 409 and dup.json()["error"]["code"] == "TRAIN_EXISTS"

    got = await client.get(f"/api/v1/admin/trains/{body['code']}", headers=admin_headers)
    assert got.status_code == 200 and got.json() == train

    listed = await client.get("/api/v1/admin/trains", headers=admin_headers)
    assert listed.status_code == 200, listed.text
    summary = next(t for t in listed.json() if t["code"] == body["code"])
    assert summary == {
        "code": body["code"],
        "kind": body["kind"],
        "from": train["stops"][0]["station"],
        "to": train["stops"][-1]["station"],
        "stops": 3,
    }

    body["carriages"].append({"carriage": 3, "seat_class": "second", "rows": 1})
    put = await client.put(f"/api/v1/admin/trains/{body['code']}", headers=admin_headers, json=body)
    assert put.status_code == 200 and put.json()["seats"] == {"first": 8, "second": 20}

    deleted = await client.delete(f"/api/v1/admin/trains/{body['code']}", headers=admin_headers)
    assert deleted.status_code == 204
    gone = await client.get(f"/api/v1/admin/trains/{body['code']}", headers=admin_headers)
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "TRAIN_NOT_FOUND"


async def test_bad_trains_are_422_and_write_nothing(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    body = await _train_body(client, admin_headers)
    cases: list[tuple[dict[str, Any], dict[str, Any]]] = []

    def variant(expected: dict[str, Any], **change: Any) -> None:
        cases.append(({**body, **change}, expected))

    stops = body["stops"]
    variant({"stop": 1, "field": "km"}, stops=[stops[0], {**stops[1], "km": 0}, stops[2]])
    variant({"stop": 2, "field": "arrives"}, stops=[stops[0], stops[1], {**stops[2], "arrives": "10:00"}])
    variant(
        {"stop": 2, "field": "station"},
        stops=[stops[0], stops[1], {**stops[2], "station": stops[0]["station"]}],
    )
    variant({"stop": 1, "field": "station"}, stops=[stops[0], {**stops[1], "station": "无此站"}, stops[2]])
    variant(
        {"carriage": 3, "field": "carriage"}, carriages=[{"carriage": 3, "seat_class": "second", "rows": 2}]
    )
    variant({"field": "kind"}, kind="G")
    for train, expected in cases:
        r = await client.post("/api/v1/admin/trains", headers=admin_headers, json=train)
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        assert error["code"] == "VALIDATION_ERROR"
        assert expected.items() <= error["details"].items(), error
    # Schema-level refusals: unknown class, too many stops, extra fields, wrong types.
    many = [{"station": f"s{i}", "arrives": "10:00", "departs": "10:00", "km": i} for i in range(61)]
    for train in (
        {**body, "carriages": [{"carriage": 1, "seat_class": "economy", "rows": 2}]} | {},
        {**body, "stops": many},
        {**body, "colour": "red"},
        {**body, "stops": "none"},
        {**body, "carriages": [{"carriage": 1, "seat_class": "second", "rows": 99}]},
    ):
        r = await client.post("/api/v1/admin/trains", headers=admin_headers, json=train)
        assert r.status_code == 422, r.text
    gone = await client.get(f"/api/v1/admin/trains/{body['code']}", headers=admin_headers)
    assert gone.status_code == 404


async def test_malformed_and_huge_bodies(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> None:
    headers = {**admin_headers, "content-type": "application/json"}
    r = await client.post("/api/v1/admin/trains", headers=headers, content=b'{"code": "G1", ')
    assert r.status_code == 422 and r.json()["error"]["code"] == "VALIDATION_ERROR"
    r = await client.post("/api/v1/admin/trains", headers=headers, content=b"x" * (10 * 1024 * 1024))
    assert r.status_code == 413 and r.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"


async def test_sales_open_and_inventory(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> None:
    body = await _train_body(client, admin_headers)
    assert (await client.post("/api/v1/admin/trains", headers=admin_headers, json=body)).status_code == 201
    day = (beijing_today() + dt.timedelta(days=3)).isoformat()
    first = await client.post("/api/v1/admin/sales/open", headers=admin_headers, json={"date": day})
    assert first.status_code == 200, first.text
    mine = {"date": day, "train_code": body["code"]}
    # The background scheduler may have opened it a moment earlier; either way it is open now.
    assert mine in first.json()["opened"] + first.json()["already_open"]
    again = await client.post(
        "/api/v1/admin/sales/open", headers=admin_headers, json={"from": day, "to": day}
    )
    assert again.status_code == 200
    assert mine in again.json()["already_open"] and mine not in again.json()["opened"]

    r = await client.get(
        f"/api/v1/admin/trains/{body['code']}/inventory", params={"date": day}, headers=admin_headers
    )
    assert r.status_code == 200, r.text
    inv = r.json()
    assert inv["train_code"] == body["code"] and inv["date"] == day
    assert inv["stations"][0] == body["stops"][0]["station"]
    assert inv["classes"]["second"] == {
        "seats": 15,
        "sold_per_segment": [0, 0],
        "remaining": {"0-1": 15, "0-2": 15, "1-2": 15},
    }
    assert inv["classes"]["first"]["seats"] == 8

    on_sale = await client.delete(f"/api/v1/admin/trains/{body['code']}", headers=admin_headers)
    assert on_sale.status_code == 409 and on_sale.json()["error"]["code"] == "TRAIN_ON_SALE"

    not_open = await client.get(
        f"/api/v1/admin/trains/{body['code']}/inventory", params={"date": "2000-01-01"}, headers=admin_headers
    )
    assert not_open.status_code == 404


async def test_sales_open_outside_the_window(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    far = (beijing_today() + dt.timedelta(days=100)).isoformat()
    past = (beijing_today() - dt.timedelta(days=1)).isoformat()
    today = beijing_today().isoformat()
    for payload in ({"date": far}, {"date": past}, {"from": today, "to": far}):
        r = await client.post("/api/v1/admin/sales/open", headers=admin_headers, json=payload)
        assert r.status_code == 422, payload
        assert r.json()["error"]["code"] == "DATE_NOT_ON_SALE"
    for payload in (
        {},
        {"date": today, "from": today, "to": today},
        {"from": today},
        {"date": "tomorrow"},
        {"from": today, "to": past},
    ):
        r = await client.post("/api/v1/admin/sales/open", headers=admin_headers, json=payload)
        assert r.status_code == 422, payload
        assert r.json()["error"]["code"] == "VALIDATION_ERROR"
