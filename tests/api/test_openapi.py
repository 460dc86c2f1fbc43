"""/openapi.json declares, for every operation, each status it can answer, errors in the envelope's
schema, and the content types it answers with. Walks every route of the app."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import httpx
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute, iter_route_contexts

from railbook.api import input_patterns as p
from railbook.api.deps import current_principal
from railbook.api.errors import ErrorEnvelope, status_of_kind
from railbook.api.openapi import ENVELOPE_REF, NO_STORE, ROUTE_ERRORS
from railbook.domain.seating import SEAT_CLASSES
from railbook.domain.timetable import TRAIN_KINDS

LIMITED = {("POST", "/api/v1/orders"), ("POST", "/api/v1/auth/login"), ("POST", "/api/v1/auth/register")}
ANTI_BOT = LIMITED


def _calls(dependant: Any) -> set[Any]:
    found = set()
    for sub in dependant.dependencies:
        found |= {sub.call} | _calls(sub)
    return found


def _routes(client: httpx.AsyncClient) -> list[tuple[str, str, Any]]:
    app = client.app  # type: ignore[attr-defined]
    found = []
    for context in iter_route_contexts(app.routes):
        if isinstance(context.original_route, APIRoute) and context.include_in_schema:
            found += [(m, context.path_format, context) for m in sorted(context.methods)]
    return found


async def _spec(client: httpx.AsyncClient) -> dict[str, Any]:
    r = await client.get("/openapi.json")
    assert r.status_code == 200
    return dict(r.json())


async def test_every_route_is_described_with_its_error_answers(client: httpx.AsyncClient) -> None:
    spec = await _spec(client)
    routes = _routes(client)
    fast_paths = {("POST", "/api/v1/orders"), ("GET", "/api/v1/orders/{order_id}")}
    assert fast_paths <= {(m, p) for m, p, _ in routes}
    for method, path, route in routes:
        operation = spec["paths"][path][method.lower()]
        responses = operation["responses"]
        where = f"{method} {path}"
        dependant = route.dependant
        takes_input = bool(
            route.body_field
            or dependant.query_params
            or dependant.path_params
            or dependant.header_params
            or (route.openapi_extra or {}).get("parameters")
        )
        if current_principal in _calls(dependant):
            assert "401" in responses, where
        if takes_input:
            assert "422" in responses, where
        if route.body_field:
            assert "400" in responses and "413" in responses, where
        if dependant.path_params:
            assert "404" in responses, where
        if (method, path) not in NO_STORE:
            assert "503" in responses and "Retry-After" in responses["503"]["headers"], where
        if (method, path) in LIMITED:
            assert "429" in responses and "Retry-After" in responses["429"]["headers"], where
        if (method, path) in ANTI_BOT:
            assert {"BLOCKED", "CAPTCHA_REQUIRED"} <= set(
                re.findall(r"[A-Z_]+", responses["403"]["description"])
            )
        for cls in ROUTE_ERRORS.get((method, path), ()):
            status = str(status_of_kind(cls))
            assert status in responses and cls.code in responses[status]["description"], (where, cls.code)
        for status, answer in responses.items():
            if int(status) >= 400:
                assert answer["content"] == {"application/json": {"schema": {"$ref": ENVELOPE_REF}}}, where
            if status == "204":
                assert "content" not in answer, where


async def test_every_operation_named_in_the_error_table_exists(client: httpx.AsyncClient) -> None:
    """A renamed route would silently lose its codes: the table names only routes of the app (those
    another part of the API adds later are allowed to be absent only if not yet routed)."""
    spec = await _spec(client)
    routed = {(m, p) for m, p, _ in _routes(client)}
    for method, path in ROUTE_ERRORS:
        if (method, path) in routed:
            assert method.lower() in spec["paths"][path]


async def test_every_api_operation_is_in_the_error_table(client: httpx.AsyncClient) -> None:
    """A new route under /api/ has its codes looked at: the table lists it (empty when it refuses
    nothing of its own). What it answers is checked against the document by every API test
    (``tests/api/conftest.py``)."""
    missing = [(m, p) for m, p, _ in _routes(client) if p.startswith("/api/") and (m, p) not in ROUTE_ERRORS]
    assert not missing, missing


async def test_content_types_are_those_answered(client: httpx.AsyncClient) -> None:
    spec = await _spec(client)
    metrics = spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(metrics) == ["text/plain"]
    assert (await client.get("/metrics")).headers["content-type"].startswith("text/plain")
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            ok = [s for s in operation["responses"] if s.startswith("2")]
            assert ok, (method, path)
    for method, path, route in _routes(client):  # pages, when described: HTML
        if isinstance(route.response_class, type) and issubclass(route.response_class, HTMLResponse):
            assert "text/html" in spec["paths"][path][method.lower()]["responses"]["200"]["content"], path
    components = spec["components"]["schemas"]
    assert "ErrorEnvelope" in components and "HTTPValidationError" not in components


async def test_what_the_app_answers_without_credentials_is_declared(client: httpx.AsyncClient) -> None:
    """Every operation asked with no token, placeholder path parameters and no body answers a status
    its operation declares, in the envelope's schema."""
    spec = await _spec(client)
    for method, path, _ in _routes(client):
        url = re.sub(r"\{[^}]+\}", "nope", path)
        r = await client.request(method, url)
        declared = spec["paths"][path][method.lower()]["responses"]
        assert str(r.status_code) in declared, (method, path, r.status_code, r.text[:200])
        if r.status_code >= 400:
            ErrorEnvelope.model_validate(r.json())


def _text(schema: dict[str, Any]) -> dict[str, Any]:
    """A parameter's or property's schema for text (its string branch when it may be null)."""
    branches = [b for b in schema.get("anyOf", [schema]) if b.get("type") == "string"]
    assert len(branches) == 1, schema
    return branches[0]


async def test_the_document_states_the_rules_of_form(client: httpx.AsyncClient) -> None:
    """Every rule of form a JSON Schema keyword can state is in the document (what each pattern
    accepts is held to its check in ``tests/unit/test_input_patterns.py``), so that a request valid
    under the document is not refused for its form."""
    spec = await _spec(client)
    components = spec["components"]["schemas"]

    def param(method: str, path: str, name: str) -> dict[str, Any]:
        found = [q for q in spec["paths"][path][method]["parameters"] if q["name"] == name]
        return _text(found[0]["schema"])

    def prop(model: str, name: str) -> dict[str, Any]:
        return _text(components[model]["properties"][name])

    for path in ("/api/v1/trains/search", "/api/v1/trains/transfers", "/api/v1/trains/{code}/seat-map"):
        for name in ("from", "to"):
            term = param("get", path, name)
            assert (term["minLength"], term["maxLength"], term["pattern"]) == (1, 64, p.STRIPPED_TERM)
    stations = param("get", "/api/v1/stations", "q")
    assert (stations["maxLength"], stations["pattern"]) == (64, p.STRIPPED_PREFIX)
    assert param("get", "/api/v1/trains/search", "kind")["pattern"] == p.TRAIN_KINDS_LIST
    for name in ("depart_after", "depart_before"):
        assert param("get", "/api/v1/trains/search", name)["pattern"] == p.CLOCK_PATTERN

    assert prop("RegisterIn", "mobile")["pattern"] == prop("BlockIn", "mobile")["pattern"] == p.MOBILE
    password = prop("RegisterIn", "password")
    assert (password["minLength"], password["maxLength"], password["pattern"]) == (8, 128, p.PRINTABLE)
    assert prop("RegisterIn", "name")["pattern"] == prop("PassengerIn", "name")["pattern"] == p.PERSON_NAME
    assert prop("PassengerIn", "id_card")["pattern"] == p.ID_CARD

    assert prop("TrainIn", "code")["pattern"] == p.TRAIN_CODE_PATTERN
    assert prop("TrainIn", "kind")["enum"] == list(TRAIN_KINDS)
    assert {b["properties"]["kind"]["const"] for b in components["TrainIn"]["anyOf"]} == set(TRAIN_KINDS)
    assert prop("CarriageIn", "seat_class")["enum"] == list(SEAT_CLASSES)
    assert prop("StopIn", "station")["pattern"] == prop("StationIn", "name")["pattern"] == p.NON_BLANK
    assert (
        prop("StationIn", "pinyin")["pattern"] == prop("StationIn", "city")["pattern"] == p.EMPTY_OR_NON_BLANK
    )
    assert prop("BlockIn", "reason")["pattern"] == p.NON_BLANK
    assert [b["required"] for b in components["BlockIn"]["oneOf"]] == [["mobile"], ["ip"]]
    assert [b["required"] for b in components["SaleOpenIn"]["oneOf"]] == [["date"], ["from", "to"]]


async def test_a_form_the_document_allows_is_not_refused_for_its_form(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    """Where the document and the checks disagreed, the document's bound holds: a station term or
    prefix of up to 64 characters is looked up (an unknown station: 404, a prefix matching nothing:
    an empty list), and a blocklist entry's ``until`` is text, not a number."""
    long_term = "无" * 40
    r = await client.get("/api/v1/stations", params={"q": long_term})
    assert (r.status_code, r.json()) == (200, [])
    date = (dt.date.today() + dt.timedelta(days=1)).isoformat()
    for path in ("/api/v1/trains/search", "/api/v1/trains/transfers"):
        r = await client.get(path, params={"from": long_term, "to": "上海虹桥", "date": date})
        assert (r.status_code, r.json()["error"]["code"]) == (404, "STATION_NOT_FOUND"), r.text
    r = await client.get("/api/v1/stations", params={"q": "无" * 65})
    assert r.status_code == 422
    block = {"ip": "203.0.113.9", "reason": "fuzz", "until": 0}
    r = await client.post("/api/v1/admin/blocklist", json=block, headers=admin_headers)
    assert (r.status_code, r.json()["error"]["code"]) == (422, "VALIDATION_ERROR"), r.text
