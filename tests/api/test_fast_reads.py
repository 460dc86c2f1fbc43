"""``GET /api/v1/orders/{order_id}`` answered by the ASGI fast path: byte for byte the FastAPI route's
answer. The route is reached by the same request under a ``root_path``, which the fast path leaves
to the framework's routing."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from railbook.adapters.db.migrate import upgrade
from railbook.api import middleware as app_module
from railbook.api.fast_reads import ORDER_ROUTE
from tests.support import (
    add_passenger,
    admin,
    app_client,
    app_settings,
    make_train_day,
    order_body,
    register,
    wait_final,
)

MOUNT = "/mounted"


@pytest.fixture
def fast_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The order ids the fast path answered during the test."""
    calls: list[str] = []
    original = app_module.read_order

    async def counted(scope: Any, order_id: str, receive: Any, send: Any) -> None:
        calls.append(order_id)
        await original(scope, order_id, receive, send)

    monkeypatch.setattr(app_module, "read_order", counted)
    return calls


Compare = Callable[..., Awaitable[httpx.Response]]


async def compared(client: httpx.AsyncClient) -> AsyncIterator[Compare]:
    """``same(path, headers)``: the fast answer, asserted equal to the route's (status, headers, body)."""
    transport = httpx.ASGITransport(app=client.app, root_path=MOUNT)  # type: ignore[attr-defined]
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as routed:

        async def same(path: str, headers: dict[str, str] | None = None) -> httpx.Response:
            headers = {**(headers or {}), "X-Request-ID": "compared"}  # else each answer names its own
            fast = await client.get(path, headers=headers)
            slow = await routed.get(MOUNT + path, headers=headers)
            assert (fast.status_code, fast.headers.raw, fast.content) == (
                slow.status_code,
                slow.headers.raw,
                slow.content,
            )
            return fast

        yield same


@pytest.fixture
async def same(client: httpx.AsyncClient) -> AsyncIterator[Compare]:
    async for compare in compared(client):
        yield compare


async def placed_order(client: httpx.AsyncClient) -> tuple[dict[str, Any], str]:
    """A member and one of their orders, accepted."""
    day = await make_train_day(client, await admin(client))
    m = await register(client)
    p = await add_passenger(client, m["headers"])
    r = await client.post("/api/v1/orders", json=order_body(day, [p]), headers=m["headers"])
    assert r.status_code == 202, r.text
    return m, r.json()["order_id"]


async def test_own_final_order_and_refusals_are_the_routes(
    client: httpx.AsyncClient, same: Compare, fast_calls: list[str]
) -> None:
    m, order_id = await placed_order(client)
    await wait_final(client, m["headers"], order_id)
    fast_calls.clear()
    path = f"/api/v1/orders/{order_id}"
    before = REGISTRY.get_sample_value(
        "railbook_http_requests_total", {"method": "GET", "route": ORDER_ROUTE, "status": "200"}
    )

    own = await same(path, m["headers"])
    assert own.status_code == 200 and own.json()["status"] == "SUCCESS"
    assert own.headers["content-type"] == "application/json"
    assert (await same(f"/api/v1/orders/{order_id.upper()}", m["headers"])).status_code == 200
    assert (await same(path + "?x=1&order_id=other", m["headers"])).content == own.content

    other = await register(client)
    assert (await same(path, other["headers"])).json()["error"]["code"] == "ORDER_NOT_FOUND"
    for malformed in ("not-an-order", "x" * 200, "%E4%B8%AD%20%3F", "a.b", " "):
        assert (await same(f"/api/v1/orders/{malformed}", m["headers"])).status_code == 404
    for headers in (
        None,
        {"Authorization": "Bearer not-a-token"},
        {"Authorization": "Bearer "},
        {"Authorization": "Basic " + m["headers"]["Authorization"][7:]},
    ):
        refused = await same(path, headers)
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "UNAUTHORIZED"
    assert len(fast_calls) == 13

    after = REGISTRY.get_sample_value(
        "railbook_http_requests_total", {"method": "GET", "route": ORDER_ROUTE, "status": "200"}
    )
    # Three from the fast path, three from the route: the same label either way.
    assert (after or 0) - (before or 0) == 6


async def test_unusual_requests_are_left_to_the_framework(
    client: httpx.AsyncClient, fast_calls: list[str]
) -> None:
    m, order_id = await placed_order(client)
    trailing = await client.get(f"/api/v1/orders/{order_id}/", headers=m["headers"])
    assert trailing.status_code in (307, 404)
    head = await client.head(f"/api/v1/orders/{order_id}", headers=m["headers"])
    assert head.status_code == 405  # FastAPI routes a GET route for GET alone
    assert (await client.get("/api/v1/orders/", headers=m["headers"])).status_code in (307, 404)
    assert (await client.get("/api/v1/orders", headers=m["headers"])).status_code == 200
    assert fast_calls == []


@pytest.fixture(scope="module")
def queued_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A migrated SQLite file of its own (migrated outside the event loop, as ``sqlite_url``)."""
    path: Path = tmp_path_factory.mktemp("queued") / "railbook.db"
    url = f"sqlite+aiosqlite:///{path}"
    upgrade(url)
    return url


@pytest.fixture(scope="module")
async def queued_client(queued_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """An embedded app without its worker loops: its orders stay in the queue."""
    async with app_client(app_settings(queued_url, None), run_background=False) as client:
        yield client


async def test_own_pending_order_is_the_routes(
    queued_client: httpx.AsyncClient, fast_calls: list[str]
) -> None:
    m, order_id = await placed_order(queued_client)
    async for same in compared(queued_client):
        pending = await same(f"/api/v1/orders/{order_id}", m["headers"])
        assert pending.status_code == 200 and pending.json()["status"] == "PENDING"
    assert fast_calls == [order_id]
