"""The error shape everywhere, and 503 + Retry-After (never a 500 or a hang) while a store is down."""

from __future__ import annotations

import socket

import httpx
import pytest
from asgi_lifespan import LifespanManager

from railbook.api.app import create_app
from railbook.bootstrap import build_container
from tests.api.conftest import test_settings


def assert_error_shape(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error["code"], str) and error["code"] == error["code"].upper()
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["details"], dict)
    if code is not None:
        assert error["code"] == code, body
    return error


async def test_unknown_path_is_404_in_the_error_shape(client: httpx.AsyncClient) -> None:
    assert_error_shape(await client.get("/api/v1/no-such-thing"), 404, "NOT_FOUND")


async def test_wrong_method_is_405_in_the_error_shape(client: httpx.AsyncClient) -> None:
    assert_error_shape(await client.delete("/healthz"), 405, "METHOD_NOT_ALLOWED")


async def test_malformed_json_is_422(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/api/v1/auth/register", content=b'{"mobile": "1390000', headers={"content-type": "application/json"}
    )
    assert_error_shape(r, 422, "VALIDATION_ERROR")


async def test_wrong_types_name_the_fields(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/v1/auth/register", json={"mobile": 13900000000, "password": [], "name": {}})
    error = assert_error_shape(r, 422, "VALIDATION_ERROR")
    fields = {f["field"] for f in error["details"]["fields"]}
    assert {"mobile", "password", "name"} <= fields


async def test_ten_megabyte_body_is_refused_before_it_is_read(client: httpx.AsyncClient) -> None:
    body = b'{"name": "' + b"x" * (10 * 1024 * 1024) + b'"}'
    r = await client.post("/api/v1/auth/register", content=body, headers={"content-type": "application/json"})
    assert_error_shape(r, 413, "PAYLOAD_TOO_LARGE")


async def test_health_and_metrics(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["database"] == "ok"
    metrics = await client.get("/metrics")
    assert metrics.status_code == 200
    assert "railbook_http_requests_total" in metrics.text
    assert "railbook_redis_batched_commands_total" in metrics.text  # the accept path's Redis batching


async def test_openapi_describes_the_contract(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    paths = set(spec["paths"])
    for path in (
        "/api/v1/auth/register",
        "/api/v1/auth/login",
        "/api/v1/me",
        "/api/v1/passengers",
        "/api/v1/trains/search",
        "/api/v1/orders",
        "/api/v1/orders/{order_id}",
        "/api/v1/admin/stations",
        "/api/v1/admin/trains",
        "/api/v1/admin/sales/open",
    ):
        assert path in paths, path


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_database_down_answers_503_with_retry_after(pg_url: str, redis_url: str) -> None:
    """A real PostgreSQL that goes away: the app keeps answering, 503 UNAVAILABLE, then recovers."""
    settings = test_settings(pg_url, redis_url)
    container = await build_container(settings)
    app = create_app(settings, container=container)
    try:
        async with LifespanManager(app) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
                login = {"mobile": "13812345678", "password": "whatever-123"}
                ok = await http.post("/api/v1/auth/login", json=login)
                assert ok.status_code == 401  # the store answers: just unknown credentials
                # Swap in an engine that points at a port where nothing listens.
                from railbook.adapters.db.engine import make_engine, make_sessionmaker

                good_engine, good_maker = container.engine, container.sessionmaker
                dead = make_engine(
                    pg_url.replace("127.0.0.1:5432", f"127.0.0.1:{_closed_port()}").replace(
                        "@127.0.0.1/", f"@127.0.0.1:{_closed_port()}/"
                    )
                )
                container.engine, container.sessionmaker = dead, make_sessionmaker(dead)
                r = await http.post("/api/v1/auth/login", json=login)
                assert_error_shape(r, 503, "UNAVAILABLE")
                assert int(r.headers["retry-after"]) >= 1
                ready = await http.get("/readyz")
                assert ready.status_code == 503 and "retry-after" in ready.headers
                container.engine, container.sessionmaker = good_engine, good_maker
                await dead.dispose()
                assert (await http.post("/api/v1/auth/login", json=login)).status_code == 401
    finally:
        await container.close()


@pytest.mark.parametrize(
    "path", ["/api/v1/me", "/api/v1/passengers", "/api/v1/orders", "/api/v1/admin/stations"]
)
async def test_missing_or_tampered_token_is_401(client: httpx.AsyncClient, path: str) -> None:
    assert_error_shape(await client.get(path), 401)
    bad = {"Authorization": "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.AAAA"}
    assert_error_shape(await client.get(path, headers=bad), 401)
