"""/openapi.json declares, for every operation, each status it can answer, errors in the envelope's
schema, and the content types it answers with. Walks every route of the app."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute, iter_route_contexts

from railbook.api.deps import current_principal
from railbook.api.errors import ErrorEnvelope, status_of_kind
from railbook.api.openapi import ENVELOPE_REF, NO_STORE, ROUTE_ERRORS

LIMITED = {("POST", "/api/v1/orders"), ("POST", "/api/v1/auth/login"), ("POST", "/api/v1/auth/register")}
ANTI_BOT = LIMITED


@pytest.fixture(autouse=True, scope="module")
def _apps_ready(pg_client: httpx.AsyncClient, sqlite_client: httpx.AsyncClient) -> None:
    """Start both apps by ordinary fixture resolution, before the parametrised ``client`` looks them up."""


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
