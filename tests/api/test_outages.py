"""A restarting PostgreSQL under POST /api/v1/orders: every answer is 202, a refusal or 503 with
Retry-After, never a 500; the app recovers by itself once the database answers again."""

from __future__ import annotations

import asyncio
import collections
import socket
import uuid
from typing import Any

import httpx
import structlog
from sqlalchemy import make_url, text

from railbook.adapters.db.engine import make_engine
from tests.api.test_errors import assert_error_shape
from tests.support import add_passenger, admin, app_client, app_settings, make_train_day, order_body, register

ANSWERS = {200, 202, 409, 503}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _member(client: httpx.AsyncClient) -> dict[str, Any]:
    m = await register(client)
    m["passengers"] = [await add_passenger(client, m["headers"]) for _ in range(3)]
    return m


async def _keyed(client: httpx.AsyncClient, m: dict[str, Any]) -> dict[str, str]:
    """Headers for an order that reads the database on the accept path: the member's passengers
    dropped from the shared cache (the order reads them, and whether its key is known), and a fresh
    Idempotency-Key."""
    await client.app.state.container.guard.forget_passengers(m["member_id"])  # type: ignore[attr-defined]
    return {**m["headers"], "Idempotency-Key": str(uuid.uuid4())}


async def test_orders_while_the_server_ends_every_connection_are_never_a_500(
    pg_url: str, redis_url: str
) -> None:
    """The backends of the database are terminated over and over (as a restart ends them, 57P01) while
    members order: the accept path's read meets connections closed mid-statement, some of which leave
    the driver's protocol out of step. Each must be a 503 with Retry-After, never a 500."""
    statuses: collections.Counter[int] = collections.Counter()
    wrong: list[str] = []
    async with app_client(app_settings(pg_url, redis_url)) as client:
        day = await make_train_day(client, await admin(client), rows=30)
        members = [await _member(client) for _ in range(6)]
        killer = make_engine(pg_url)
        stop = asyncio.Event()

        async def end_every_connection() -> None:
            async with killer.connect() as conn:
                while not stop.is_set():
                    await conn.execute(
                        text(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                        )
                    )
                    await conn.commit()

        async def order(m: dict[str, Any]) -> None:
            for k in range(25):
                body = order_body(day, [m["passengers"][k % 3]], 0, 1 + k % 3)
                for r in (
                    await client.post("/api/v1/orders", json=body, headers=await _keyed(client, m)),
                    await client.get("/api/v1/orders", headers=m["headers"]),
                ):
                    statuses[r.status_code] += 1
                    if r.status_code not in ANSWERS or (
                        r.status_code == 503 and "retry-after" not in r.headers
                    ):
                        wrong.append(
                            f"{r.request.method} {r.request.url.path}: {r.status_code} {r.text[:200]}"
                        )

        storm = asyncio.create_task(end_every_connection())
        try:
            await asyncio.gather(*(order(m) for m in members))
        finally:
            stop.set()
            await storm
            await killer.dispose()
        assert statuses[503] > 0, statuses  # the storm was felt
        assert not wrong, (statuses, wrong[:3])
        # Once the database is left alone, orders are accepted again.
        m = members[0]
        headers = await _keyed(client, m)
        r = await client.post(
            "/api/v1/orders", json=order_body(day, [m["passengers"][0]], 2, 3), headers=headers
        )
        assert r.status_code in (202, 409), r.text


async def test_an_order_while_the_database_refuses_connections_is_503(pg_url: str, redis_url: str) -> None:
    """Connections refused (the database is down or restarting): POST /orders answers 503 with
    Retry-After, on the fast path, then 202 once connections are accepted again."""
    async with app_client(app_settings(pg_url, redis_url)) as client:
        day = await make_train_day(client, await admin(client))
        m = await _member(client)
        container = client.app.state.container  # type: ignore[attr-defined]
        reads = container.accept_reads.pool
        good_dsn = reads.dsn
        await reads.aclose()
        refused = make_url(good_dsn).set(port=_closed_port()).render_as_string(hide_password=False)
        reads.pool, reads.dsn = None, refused
        try:
            body = order_body(day, [m["passengers"][0]])
            with structlog.testing.capture_logs(
                processors=[structlog.contextvars.merge_contextvars]
            ) as lines:
                r = await client.post("/api/v1/orders", json=body, headers=await _keyed(client, m))
            assert_error_shape(r, 503, "UNAVAILABLE")
            assert int(r.headers["retry-after"]) >= 1
            # The fast path's outage line names the request it answered.
            logged = [line for line in lines if line["event"] == "store_unavailable"]
            assert logged and logged[0]["request_id"] == r.headers["x-request-id"], lines
        finally:
            reads.pool, reads.dsn = None, good_dsn
        r = await client.post("/api/v1/orders", json=body, headers=await _keyed(client, m))
        assert r.status_code == 202, r.text
