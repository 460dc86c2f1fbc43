"""The 12306 rules of search over HTTP, on both store configurations: station names by pinyin and
initials, boarding dates (a train reaching a station after midnight is found, booked and shown under
that day), the sale cut-off, transfers, and counts exact once the order has left the queue."""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

import httpx

from railbook.domain.fees import BEIJING
from railbook.kit.clock import beijing_today
from railbook.services.search.station_names import spell
from tests.naming import station_code, train_code
from tests.support import add_passenger, admin, register, wait_final

SEARCH = "/api/v1/trains/search"
TRANSFERS = "/api/v1/trains/transfers"
STATIONS = "/api/v1/stations"
# Characters whose readings pypinyin knows without context, for station names no other test uses.
HANZI = "安宁平阳江山河城州德兴华明新庆丰泰清远湖林原川台桥溪峰松柏梅竹兰菊"


async def _stations(client: httpx.AsyncClient, headers: dict[str, str], n: int) -> list[str]:
    """``n`` new stations with made-up Chinese names; their names."""
    names = []
    while len(names) < n:
        name = "".join(random.choices(HANZI, k=4)) + "站"
        r = await client.post(
            "/api/v1/admin/stations", json={"name": name, "code": station_code()}, headers=headers
        )
        if r.status_code == 201:
            names.append(name)
        else:
            assert r.status_code == 409, r.text
    return names


def _stop(name: str, km: int, arrives: str | None = None, departs: str | None = None, day: int = 0) -> Any:
    stop: dict[str, Any] = {"station": name, "km": km}
    if arrives:
        stop["arrives"] = arrives
    if departs:
        stop["departs"] = departs
    if day:
        stop["day"] = day
    return stop


async def _train(client: httpx.AsyncClient, headers: dict[str, str], stops: list[Any], rows: int = 2) -> str:
    code = train_code("G")
    spec = {
        "code": code,
        "kind": "G",
        "stops": stops,
        "carriages": [{"carriage": 1, "seat_class": "second", "rows": rows}],
    }
    r = await client.post("/api/v1/admin/trains", json=spec, headers=headers)
    assert r.status_code == 201, r.text
    return code


async def _open(client: httpx.AsyncClient, headers: dict[str, str], *dates: dt.date) -> None:
    for date in dates:
        r = await client.post("/api/v1/admin/sales/open", json={"date": date.isoformat()}, headers=headers)
        assert r.status_code == 200, r.text


async def _search(client: httpx.AsyncClient, frm: str, to: str, date: dt.date) -> list[dict[str, Any]]:
    r = await client.get(SEARCH, params={"from": frm, "to": to, "date": date.isoformat()})
    assert r.status_code == 200, r.text
    found: list[dict[str, Any]] = r.json()
    return found


async def test_stations_by_name_pinyin_initials_and_code(client: httpx.AsyncClient) -> None:
    headers = await admin(client)
    (name,) = await _stations(client, headers, 1)
    r = await client.get("/api/v1/admin/stations", params={"q": name}, headers=headers)
    code = r.json()[0]["code"]
    pinyin, initials = spell(name)
    expected = {"name": name, "code": code, "pinyin": pinyin, "initials": initials, "city": ""}
    for q in (name, name[:2], pinyin, pinyin[:7].upper(), initials, initials.upper(), code, code.lower()):
        r = await client.get(STATIONS, params={"q": q})
        assert r.status_code == 200, r.text
        assert expected in r.json(), q
        assert len(r.json()) <= 20
    assert initials == "".join(syllable[0] for syllable in pinyin_syllables(name))
    for q in ("qqqzzzxxx", "没有这个站名字"):
        r = await client.get(STATIONS, params={"q": q})
        assert r.status_code == 200 and r.json() == []
    for params in ({}, {"q": ""}, {"q": "   "}):
        r = await client.get(STATIONS, params=params)
        assert r.status_code == 200 and r.json() == []
    r = await client.get(STATIONS, params={"q": "bj\x00n"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "VALIDATION_ERROR"
    r = await client.get(STATIONS, params={"q": "x" * 65})
    assert r.status_code == 422 and r.json()["error"]["code"] == "VALIDATION_ERROR"


def pinyin_syllables(name: str) -> list[str]:
    from pypinyin import lazy_pinyin

    return lazy_pinyin(name)


async def test_an_overnight_train_is_found_booked_and_counted_under_the_boarding_date(
    client: httpx.AsyncClient,
) -> None:
    """Origin 23:00 on S, a stop at 01:15 on S+1: from that stop it is S+1's train."""
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
    )
    service = beijing_today() + dt.timedelta(days=2)
    boarding = service + dt.timedelta(days=1)
    await _open(client, headers, service)

    assert [t["train_code"] for t in await _search(client, a, c, service)] == [code]
    assert await _search(client, b, c, service) == []  # it leaves b on the next day
    (offer,) = await _search(client, b, c, boarding)
    assert offer["train_code"] == code
    assert offer["date"] == boarding.isoformat() and offer["service_date"] == service.isoformat()
    assert offer["from"] == {"station": b, "departs": "01:15", "index": 1, "date": boarding.isoformat()}
    assert offer["to"] == {"station": c, "arrives": "03:00", "index": 2, "date": boarding.isoformat()}
    assert offer["duration_minutes"] == 105
    free = offer["seats"]["second"]["remaining"]
    (whole,) = await _search(client, a, c, service)
    assert whole["to"]["date"] == boarding.isoformat()  # an overnight arrival reads as the next day

    r = await client.get(
        f"/api/v1/trains/{code}/seat-map",
        params={"from": b, "to": c, "date": boarding.isoformat(), "seat_class": "second"},
    )
    assert r.status_code == 200, r.text
    r = await client.get(
        f"/api/v1/trains/{code}/seat-map",
        params={"from": b, "to": c, "date": service.isoformat(), "seat_class": "second"},
    )
    assert r.status_code == 404 and r.json()["error"]["code"] == "TRAIN_NOT_FOUND"

    member = await register(client)
    pid = await add_passenger(client, member["headers"])
    body = {
        "train_code": code,
        "from": b,
        "to": c,
        "passengers": [{"passenger_id": pid, "seat_class": "second"}],
    }
    r = await client.post(
        "/api/v1/orders", json={**body, "date": service.isoformat()}, headers=member["headers"]
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "DATE_NOT_ON_SALE"
    r = await client.post(
        "/api/v1/orders", json={**body, "date": boarding.isoformat()}, headers=member["headers"]
    )
    assert r.status_code == 202, r.text
    order = await wait_final(client, member["headers"], r.json()["order_id"])
    assert order["status"] == "SUCCESS", order
    # The order has left the queue: search counts it at once (no cached count outlives the commit).
    (after,) = await _search(client, b, c, boarding)
    assert after["seats"]["second"]["remaining"] == free - 1
    (whole,) = await _search(client, a, c, service)
    assert whole["seats"]["second"]["remaining"] == free - 1


async def test_a_committed_sale_shows_in_search_at_once(client: httpx.AsyncClient) -> None:
    headers = await admin(client)
    a, b = await _stations(client, headers, 2)
    code = await _train(client, headers, [_stop(a, 0, departs="10:00"), _stop(b, 300, arrives="11:30")])
    date = beijing_today() + dt.timedelta(days=4)
    await _open(client, headers, date)
    member = await register(client)
    pids = [await add_passenger(client, member["headers"]) for _ in range(2)]
    body = {
        "date": date.isoformat(),
        "train_code": code,
        "from": a,
        "to": b,
        "passengers": [{"passenger_id": p, "seat_class": "second"} for p in pids],
    }
    (offer,) = await _search(client, a, b, date)  # fills the hot answer and the count snapshot
    assert offer["seats"]["second"]["remaining"] == 10  # two rows of five seats
    r = await client.post("/api/v1/orders", json=body, headers=member["headers"])
    assert r.status_code == 202, r.text
    order_id = r.json()["order_id"]
    assert (await wait_final(client, member["headers"], order_id))["status"] == "SUCCESS"
    (offer,) = await _search(client, a, b, date)
    assert offer["seats"]["second"]["remaining"] == 8
    r = await client.post(f"/api/v1/orders/{order_id}/cancel", headers=member["headers"])
    assert r.status_code == 200, r.text
    (offer,) = await _search(client, a, b, date)
    assert offer["seats"]["second"]["remaining"] == 10


async def test_trains_inside_the_sale_cutoff_are_not_listed(client: httpx.AsyncClient) -> None:
    """The train leaves a in 3 minutes (Beijing time): a→c is closed; b→c, 40 minutes later, is not."""
    headers = await admin(client)
    a, b, c = await _stations(client, headers, 3)
    leaves = (dt.datetime.now(BEIJING) + dt.timedelta(minutes=3)).replace(second=0, microsecond=0)
    service = leaves.date()

    def at(minutes: int) -> tuple[str, int]:
        moment = leaves + dt.timedelta(minutes=minutes)
        return moment.strftime("%H:%M"), (moment.date() - service).days

    (b_arr, b_day), (b_dep, _), (c_arr, c_day) = at(40), at(42), at(100)
    code = await _train(
        client,
        headers,
        [
            _stop(a, 0, departs=leaves.strftime("%H:%M")),
            _stop(b, 200, arrives=b_arr, departs=b_dep, day=b_day),
            _stop(c, 500, arrives=c_arr, day=c_day),
        ],
    )
    await _open(client, headers, service)
    assert await _search(client, a, c, service) == []
    assert await _search(client, a, b, service) == []
    boarding_b = (leaves + dt.timedelta(minutes=42)).date()
    assert [t["train_code"] for t in await _search(client, b, c, boarding_b)] == [code]


async def test_transfers_are_found_and_ordered_by_arrival(client: httpx.AsyncClient) -> None:
    headers = await admin(client)
    p, q, r_, late = await _stations(client, headers, 4)
    first = await _train(client, headers, [_stop(p, 0, departs="08:00"), _stop(q, 100, arrives="09:00")])
    evening = await _train(client, headers, [_stop(p, 0, departs="20:00"), _stop(q, 100, arrives="23:30")])
    slow = await _train(client, headers, [_stop(q, 0, departs="09:40"), _stop(r_, 200, arrives="11:00")])
    await _train(client, headers, [_stop(q, 0, departs="09:10"), _stop(r_, 200, arrives="10:00")])  # 10 min
    fast = await _train(client, headers, [_stop(q, 0, departs="10:00"), _stop(r_, 200, arrives="10:50")])
    await _train(client, headers, [_stop(q, 0, departs="16:00"), _stop(r_, 200, arrives="17:00")])  # 7 h
    night = await _train(client, headers, [_stop(q, 0, departs="00:40"), _stop(r_, 200, arrives="02:00")])
    await _train(client, headers, [_stop(p, 0, departs="07:00"), _stop(late, 50, arrives="07:30")])
    date = beijing_today() + dt.timedelta(days=5)
    await _open(client, headers, date, date + dt.timedelta(days=1))

    resp = await client.get(TRANSFERS, params={"from": p, "to": r_, "date": date.isoformat()})
    assert resp.status_code == 200, resp.text
    found = resp.json()
    assert [(t["legs"][0]["train_code"], t["legs"][1]["train_code"]) for t in found] == [
        (first, fast),
        (first, slow),
        (evening, night),  # changes after midnight: the second leg boards the next day
    ]
    assert [(t["transfer_station"], t["wait_minutes"], t["duration_minutes"]) for t in found] == [
        (q, 60, 170),
        (q, 40, 180),
        (q, 70, 360),
    ]
    night_leg = found[2]["legs"][1]
    next_day = (date + dt.timedelta(days=1)).isoformat()
    assert night_leg["date"] == next_day and night_leg["from"]["date"] == next_day
    assert (
        found[0]["legs"][0]["seats"]["second"]["prices"]["adult"]
        == found[0]["legs"][0]["seats"]["second"]["price"]
    )
    assert found[0]["legs"][0]["from"] == {
        "station": p,
        "departs": "08:00",
        "index": 0,
        "date": date.isoformat(),
    }

    for params, status, error in (
        ({"from": "没有这个站", "to": r_, "date": date.isoformat()}, 404, "STATION_NOT_FOUND"),
        ({"from": p, "to": r_, "date": (date + dt.timedelta(days=400)).isoformat()}, 422, "DATE_NOT_ON_SALE"),
        ({"from": p, "to": p, "date": date.isoformat()}, 422, "SAME_STATION"),
    ):
        resp = await client.get(TRANSFERS, params=params)
        assert resp.status_code == status and resp.json()["error"]["code"] == error, resp.text
    resp = await client.get(TRANSFERS, params={"from": p, "to": late, "date": date.isoformat()})
    assert resp.status_code == 200 and resp.json() == []  # a through train is no transfer


async def test_openapi_describes_the_new_search_endpoints(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    paths, schemas = spec["paths"], spec["components"]["schemas"]
    assert {"/api/v1/stations", "/api/v1/trains/transfers"} <= set(paths)
    assert {"service_date", "from", "to", "seats"} <= set(schemas["TrainOfferOut"]["properties"])
    assert "date" in schemas["DepartureOut"]["properties"] and "date" in schemas["ArrivalOut"]["properties"]
    assert "prices" in schemas["SeatOfferOut"]["properties"]
    assert set(schemas["FaresOut"]["properties"]) == {"adult", "child", "student", "disabled_military"}
    transfers = paths["/api/v1/trains/transfers"]["get"]
    assert transfers["responses"]["200"]["content"]["application/json"]["schema"]["items"]["$ref"].endswith(
        "/TransferOut"
    )
