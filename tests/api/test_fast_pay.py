"""``POST /api/v1/orders/{order_id}/pay`` answered by the ASGI fast path: byte for byte the FastAPI
route's answer. The route is reached by the same request under a ``root_path``, which the fast path
leaves to the framework's routing. Paying a paid order answers it as paid, so the route's answer to
the second pay is compared with the fast path's to the first."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from railbook.api import middleware as app_module
from railbook.api.fast_orders import PAY_ROUTE
from tests.api.test_fast_reads import MOUNT, placed_order
from tests.support import wait_final


@pytest.fixture
def fast_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The order ids the fast path took during the test (answered, or left to the route)."""
    calls: list[str] = []
    original = app_module.direct_pay

    async def counted(scope: Any, order_id: str, receive: Any, send: Any) -> Any:
        calls.append(order_id)
        return await original(scope, order_id, receive, send)

    monkeypatch.setattr(app_module, "direct_pay", counted)
    return calls


Compare = Callable[..., Awaitable[httpx.Response]]


@pytest.fixture
async def same(client: httpx.AsyncClient) -> AsyncIterator[Compare]:
    """``same(path, headers, **request)``: the fast answer, asserted equal to the route's (status,
    headers, body) to the same POST sent after it."""
    transport = httpx.ASGITransport(app=client.app, root_path=MOUNT)  # type: ignore[attr-defined]
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as routed:

        async def compare(path: str, headers: dict[str, str] | None = None, **request: Any) -> httpx.Response:
            headers = {**(headers or {}), "X-Request-ID": "compared"}  # else each answer names its own
            fast = await client.post(path, headers=headers, **request)
            slow = await routed.post(MOUNT + path, headers=headers, **request)
            assert (fast.status_code, fast.headers.raw, fast.content) == (
                slow.status_code,
                slow.headers.raw,
                slow.content,
            )
            return fast

        yield compare


def _paid_200() -> float:
    found = REGISTRY.get_sample_value(
        "railbook_http_requests_total", {"method": "POST", "route": PAY_ROUTE, "status": "200"}
    )
    return found or 0.0


async def test_pay_and_its_refusals_are_the_routes(
    client: httpx.AsyncClient, same: Compare, fast_calls: list[str]
) -> None:
    m, order_id = await placed_order(client)
    await wait_final(client, m["headers"], order_id)
    path = f"/api/v1/orders/{order_id}/pay"
    before = _paid_200()

    paid = await same(path, m["headers"], json={"method": "mock"})
    assert paid.status_code == 200 and paid.json()["payment_status"] == "PAID"
    assert [t["status"] for t in paid.json()["tickets"]] == ["PAID"]
    keyed = {**m["headers"], "Idempotency-Key": "pay-once"}
    assert (await same(path, keyed, json={})).content == paid.content
    assert (await same(f"/api/v1/orders/{order_id.upper()}/pay", m["headers"], json={})).status_code == 200
    assert _paid_200() - before == 6  # three from the fast path, three from the route: one label

    other = await register_other(client)
    assert (await same(path, other, json={})).json()["error"]["code"] == "ORDER_NOT_FOUND"
    for malformed in ("not-an-order", "x" * 200, "%E4%B8%AD%20%3F", "a.b"):
        assert (await same(f"/api/v1/orders/{malformed}/pay", m["headers"], json={})).status_code == 404
    for headers in (None, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Bearer "}):
        refused = await same(path, headers, json={})
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "UNAUTHORIZED"
    assert len(fast_calls) == 11


async def test_requests_the_route_must_judge_are_left_to_it(
    client: httpx.AsyncClient, same: Compare, fast_calls: list[str]
) -> None:
    """A body or header the route's validation refuses reaches the route, which answers 422 in the
    error shape; so does a body that is not JSON. Nothing is paid."""
    m, order_id = await placed_order(client)
    await wait_final(client, m["headers"], order_id)
    path = f"/api/v1/orders/{order_id}/pay"
    for request in (
        {"json": {"method": "card"}},
        {"json": ["mock"]},
        {"content": b"{not json", "headers": {"Content-Type": "application/json"}},
        {"content": b"method=mock", "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
    ):
        extra = request.pop("headers", {})
        refused = await same(path, {**m["headers"], **extra}, **request)
        assert refused.status_code == 422 and refused.json()["error"]["code"] == "VALIDATION_ERROR"
    too_long = await same(path, {**m["headers"], "Idempotency-Key": "k" * 129}, json={})
    assert too_long.status_code == 422
    assert len(fast_calls) == 5  # each taken by the fast path, then left to the route
    order = (await client.get(f"/api/v1/orders/{order_id}", headers=m["headers"])).json()
    assert order["payment_status"] == "UNPAID"
    trailing = await client.post(path + "/", headers=m["headers"], json={})
    assert trailing.status_code in (307, 404)
    assert len(fast_calls) == 5


async def register_other(client: httpx.AsyncClient) -> dict[str, str]:
    from tests.support import register

    return dict((await register(client))["headers"])
