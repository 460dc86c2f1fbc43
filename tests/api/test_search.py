"""GET /api/v1/trains/search and /trains/{code}/seat-map over HTTP, on both store configurations,
with the timetable published and opened through the admin API."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

import httpx
import pytest

from railbook.kit.clock import beijing_today
from tests.naming import station_code, train_code

DAY = beijing_today() + dt.timedelta(days=3)
SEARCH = "/api/v1/trains/search"


@dataclass
class Line:
    names: list[str]
    codes: list[str]
    city: str
    fast: str  # G train over stops 0..3
    slow: str  # D train, later, overnight to stop 3


async def _station(client: httpx.AsyncClient, headers: dict[str, str], name: str, city: str) -> str:
    for _ in range(50):
        code = station_code()
        r = await client.post(
            "/api/v1/admin/stations", json={"name": name, "code": code, "city": city}, headers=headers
        )
        if r.status_code == 201:
            return code
        assert r.status_code == 409, r.text
    raise AssertionError("no free station code")


async def publish_line(client: httpx.AsyncClient, headers: dict[str, str]) -> Line:
    tag = uuid.uuid4().hex[:8]
    names = [f"线{tag}站{i}" for i in range(4)]
    city = f"都{tag}"
    codes = [
        await _station(client, headers, n, city if i < 2 else f"镇{tag}{i}") for i, n in enumerate(names)
    ]
    fast, slow = train_code("G"), train_code("D")
    trains = [
        {
            "code": fast,
            "kind": "G",
            "stops": [
                {"station": names[0], "departs": "09:00", "km": 0},
                {"station": names[1], "arrives": "09:20", "departs": "09:22", "km": 40},
                {"station": names[2], "arrives": "10:22", "departs": "10:24", "km": 406},
                {"station": names[3], "arrives": "13:28", "km": 1318},
            ],
            "carriages": [
                {"carriage": 1, "seat_class": "business", "rows": 2},
                {"carriage": 2, "seat_class": "second", "rows": 3},
            ],
        },
        {
            "code": slow,
            "kind": "D",
            "stops": [
                {"station": names[0], "departs": "20:10", "km": 0},
                {"station": names[3], "arrives": "07:40", "day": 1, "km": 1318},
            ],
            "carriages": [{"carriage": 1, "seat_class": "second", "rows": 2}],
        },
    ]
    for train in trains:
        r = await client.post("/api/v1/admin/trains", json=train, headers=headers)
        assert r.status_code == 201, r.text
    r = await client.post("/api/v1/admin/sales/open", json={"date": DAY.isoformat()}, headers=headers)
    assert r.status_code == 200, r.text
    return Line(names, codes, city, fast, slow)


@pytest.fixture
async def line(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> Line:
    return await publish_line(client, admin_headers)


def _params(frm: str, to: str, date: dt.date = DAY, **extra: str) -> dict[str, str]:
    return {"from": frm, "to": to, "date": date.isoformat(), **extra}


async def test_search_answers_in_the_contract_shape(client: httpx.AsyncClient, line: Line) -> None:
    r = await client.get(SEARCH, params=_params(line.names[0], line.names[3]))
    assert r.status_code == 200, r.text
    assert "x-railbook-stale" not in r.headers
    body = r.json()
    assert [t["train_code"] for t in body] == [line.fast, line.slow]
    day = DAY.isoformat()
    assert body[0] == {
        "train_code": line.fast,
        "date": day,
        "service_date": day,
        "from": {"station": line.names[0], "departs": "09:00", "index": 0, "date": day},
        "to": {"station": line.names[3], "arrives": "13:28", "index": 3, "date": day},
        "duration_minutes": 268,
        "seats": {
            "business": {
                "remaining": 6,
                "price": "1910.00",
                "prices": {
                    "adult": "1910.00",
                    "child": "955.00",
                    "student": "1910.00",  # full fare outside second class and hard seats
                    "disabled_military": "955.00",
                },
            },
            "second": {
                "remaining": 15,
                "price": "606.50",
                "prices": {
                    "adult": "606.50",
                    "child": "303.50",
                    "student": "455.00",  # 75 % of 606.50 = 454.875, to the nearest 0.50
                    "disabled_military": "303.50",
                },
            },
        },
    }
    assert body[1]["duration_minutes"] == 11 * 60 + 30  # overnight: 20:10 → 07:40 next day
    assert body[1]["from"]["date"] == day and body[1]["service_date"] == day
    assert body[1]["to"]["date"] == (DAY + dt.timedelta(days=1)).isoformat()


async def test_stations_by_code_and_city(client: httpx.AsyncClient, line: Line) -> None:
    by_code = (await client.get(SEARCH, params=_params(line.codes[0], line.codes[3]))).json()
    by_name = (await client.get(SEARCH, params=_params(line.names[0], line.names[3]))).json()
    assert by_code == by_name
    city = (await client.get(SEARCH, params=_params(line.city, line.names[2]))).json()
    assert [(t["from"]["station"], t["to"]["index"]) for t in city] == [
        (line.names[0], 2),
        (line.names[1], 2),
    ]
    backwards = await client.get(SEARCH, params=_params(line.names[3], line.names[0]))
    assert backwards.status_code == 200 and backwards.json() == []


async def test_filters_by_kind_and_departure(client: httpx.AsyncClient, line: Line) -> None:
    async def codes(**extra: str) -> list[str]:
        r = await client.get(SEARCH, params=_params(line.names[0], line.names[3], **extra))
        assert r.status_code == 200, r.text
        return [t["train_code"] for t in r.json()]

    assert await codes(kind="D") == [line.slow]
    assert await codes(kind="G,D") == [line.fast, line.slow]
    assert await codes(depart_after="12:00") == [line.slow]
    assert await codes(depart_before="12:00") == [line.fast]
    assert await codes(depart_after="09:00", depart_before="09:00") == [line.fast]


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ({"from": "没有这个站", "to": "{to}"}, 404, "STATION_NOT_FOUND"),
        ({"from": "{to}", "to": "{to}"}, 422, "SAME_STATION"),
        ({"from": "{from}", "to": "{to}", "date": "past"}, 422, "DATE_NOT_ON_SALE"),
        ({"from": "{from}", "to": "{to}", "date": "far"}, 422, "DATE_NOT_ON_SALE"),
        ({"from": "站" * 3_400, "to": "{to}"}, 422, "VALIDATION_ERROR"),  # 10 KB of UTF-8
        ({"from": "x" * 10_240, "to": "{to}"}, 422, "VALIDATION_ERROR"),
        ({"from": "北京\x00南", "to": "{to}"}, 422, "VALIDATION_ERROR"),
        ({"from": "北京\n南", "to": "{to}"}, 422, "VALIDATION_ERROR"),
        ({"from": "   ", "to": "{to}"}, 422, "VALIDATION_ERROR"),
        ({"to": "{to}"}, 422, "VALIDATION_ERROR"),
        ({"from": "{from}", "to": "{to}", "date": "2026-13-45"}, 422, "VALIDATION_ERROR"),
        ({"from": "{from}", "to": "{to}", "kind": "X"}, 422, "VALIDATION_ERROR"),
        ({"from": "{from}", "to": "{to}", "depart_after": "25:00"}, 422, "VALIDATION_ERROR"),
    ],
)
async def test_bad_searches_answer_in_the_error_shape(
    client: httpx.AsyncClient, line: Line, params: dict[str, str], status: int, code: str
) -> None:
    dates = {"past": DAY - dt.timedelta(days=30), "far": beijing_today() + dt.timedelta(days=400)}
    query = {"date": DAY.isoformat()}
    for key, value in params.items():
        value = value.replace("{from}", line.names[0]).replace("{to}", line.names[3])
        query[key] = dates[value].isoformat() if value in dates else value
    r = await client.get(SEARCH, params=query)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code and error["message"] and isinstance(error["details"], dict)


async def test_seat_map(client: httpx.AsyncClient, line: Line) -> None:
    url = f"/api/v1/trains/{line.fast}/seat-map"
    r = await client.get(url, params=_params(line.names[1], line.codes[2], seat_class="business"))
    assert r.status_code == 200, r.text
    assert r.json() == {
        "carriages": [
            {
                "carriage": "01",
                "rows": [
                    {
                        "row": row,
                        "seats": [{"seat": f"01-{row:02d}{letter}", "free": True} for letter in "ACF"],
                    }
                    for row in (1, 2)
                ],
            }
        ]
    }

    async def error(code: str, **params: str) -> tuple[int, str]:
        r = await client.get(f"/api/v1/trains/{code}/seat-map", params=params)
        return r.status_code, r.json()["error"]["code"]

    base = _params(line.names[0], line.names[3])
    assert await error("G1", **base, seat_class="second") == (404, "TRAIN_NOT_FOUND")
    assert await error(line.slow, **base, seat_class="business") == (422, "SEAT_CLASS_NOT_ON_TRAIN")
    assert await error(line.fast, **base, seat_class="deluxe") == (422, "VALIDATION_ERROR")
    assert await error(line.fast, **_params(line.names[3], line.names[0]), seat_class="second") == (
        422,
        "BAD_JOURNEY",
    )
    assert await error(line.fast, **_params("没有这个站", line.names[0]), seat_class="second") == (
        404,
        "STATION_NOT_FOUND",
    )


async def test_openapi_describes_search(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    params = {p["name"]: p for p in paths["/api/v1/trains/search"]["get"]["parameters"]}
    assert {"from", "to", "date", "kind", "depart_after", "depart_before"} <= set(params)
    assert all(p["in"] == "query" for p in params.values())
    assert [n for n, p in params.items() if p["required"]] == ["from", "to", "date"]
    assert params["from"]["schema"]["minLength"] == 1 and params["from"]["schema"]["maxLength"] == 64
    assert params["date"]["schema"]["format"] == "date"
    assert "/api/v1/trains/{code}/seat-map" in paths


@pytest.mark.parametrize(
    ("query", "fields"),
    [
        ("to=x", [("query.from", "missing"), ("query.date", "missing")]),
        ("from=&to=x&date={day}", [("query.from", "string_too_short")]),
        (
            "from={long}&to={long}&date={day}",
            [("query.from", "string_too_long"), ("query.to", "string_too_long")],
        ),
        ("from=a&to=b&date=2026-02-30", [("query.date", "date_from_datetime_parsing")]),
        (
            "from=a&to=b&date=%EF%BC%92026-12-01",
            [("query.date", "date_from_datetime_parsing")],
        ),  # full-width 2
        ("from=a&to=b&date={day}&kind={long}", [("query.kind", "string_too_long")]),
        ("from=a&to=b&date={day}&depart_after=09:000", [("query.depart_after", "string_too_long")]),
    ],
)
async def test_parameter_errors_name_the_field_and_pydantic_type(
    client: httpx.AsyncClient, query: str, fields: list[tuple[str, str]]
) -> None:
    """The route reads its parameters by hand; refusals still read as FastAPI's query validation."""
    query = query.replace("{day}", DAY.isoformat()).replace("{long}", "x" * 65)
    for _ in range(2):  # the second time the same query string is asked again, not remembered
        r = await client.get(f"{SEARCH}?{query}")
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        assert error["code"] == "VALIDATION_ERROR"
        assert [(f["field"], f["type"]) for f in error["details"]["fields"]] == fields
        assert all(f["message"] for f in error["details"]["fields"])


async def test_same_query_in_other_spellings_gets_the_same_answer(
    client: httpx.AsyncClient, line: Line
) -> None:
    from urllib.parse import quote

    plain = f"from={quote(line.names[0])}&to={quote(line.names[3])}&date={DAY.isoformat()}"
    spellings = [
        plain,
        plain + "&kind=",  # an empty filter filters nothing
        f"date={DAY.isoformat()}&to={quote(line.names[3])}&from={quote(line.names[0])}",
        f"from=x&from={quote(line.names[0])}&to={quote(line.names[3])}&date={DAY.isoformat()}",  # last wins
        f"from=+{quote(line.names[0])}+&to={quote(line.names[3])}&date={DAY.isoformat()}",  # blanks trimmed
    ]
    bodies = []
    for path in spellings:
        r = await client.get(f"{SEARCH}?{path}")
        assert r.status_code == 200, (path, r.text)
        bodies.append(r.json())
    assert all(b == bodies[0] for b in bodies) and len(bodies[0]) == 2


async def test_the_encoded_body_is_what_pydantic_would_render(client: httpx.AsyncClient, line: Line) -> None:
    from pydantic import TypeAdapter

    from railbook.api.schemas_search import TrainOfferOut

    r = await client.get(SEARCH, params=_params(line.city, line.names[3]))
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert len(r.json()) >= 2
    adapter = TypeAdapter(list[TrainOfferOut])
    rendered = adapter.dump_json(adapter.validate_json(r.content), by_alias=True)
    assert r.content == rendered  # byte for byte: same keys, order, numbers and compact separators


async def test_openapi_documents_the_search_answer(client: httpx.AsyncClient) -> None:
    get = (await client.get("/openapi.json")).json()["paths"]["/api/v1/trains/search"]["get"]
    schema = get["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema["type"] == "array" and schema["items"]["$ref"].endswith("/TrainOfferOut")
