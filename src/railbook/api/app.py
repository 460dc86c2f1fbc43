"""FastAPI app factory. The container (engine, Redis, allocator, ...) is built in the lifespan."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from railbook.api.errors import HTTP_CODES, error_response, install_error_handlers, unexpected_error_response
from railbook.api.fast_orders import ORDERS_PATH, direct_order
from railbook.api.fast_reads import ORDER_ROUTE, polled_order_id, read_order
from railbook.bootstrap import Container, build_container, freeze_startup_heap
from railbook.config import Settings
from railbook.logs import configure_logging

MAX_BODY_BYTES = 256 * 1024

REQUESTS = Counter("railbook_http_requests_total", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram(
    "railbook_http_request_seconds",
    "HTTP request latency",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)

StartupHook = Callable[[Container], Awaitable[Any]]


class GuardMiddleware:
    """Pure ASGI guard: refuses oversized bodies (413) before they are read whole, turns any
    escaped exception into the error shape (503 for store outages, never a bare 500 page) and
    records request metrics."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status_holder = {"status": 500, "sent": False}
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            refusal = error_response(
                413, "PAYLOAD_TOO_LARGE", f"Bodies are limited to {MAX_BODY_BYTES} bytes."
            )
            await refusal(scope, receive, send)
            return
        received = 0
        route_label = ""

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > MAX_BODY_BYTES:
                    raise _BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                status_holder["sent"] = True
            await send(message)

        try:
            if scope["method"] == "POST" and scope["path"] == ORDERS_PATH:
                route_label = ORDERS_PATH
                rest = await direct_order(scope, limited_receive, tracking_send)
                if rest is not None:
                    await self.app(scope, rest, tracking_send)
            elif (order_id := polled_order_id(scope)) is not None:
                route_label = ORDER_ROUTE
                await read_order(scope, order_id, limited_receive, tracking_send)
            else:
                await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not status_holder["sent"]:
                await error_response(413, "PAYLOAD_TOO_LARGE", "Body too large.")(scope, receive, send)
        except Exception as exc:
            if status_holder["sent"]:
                raise
            await unexpected_error_response(exc, scope.get("path", ""))(scope, receive, send)
        finally:
            path = route_label or getattr(scope.get("route"), "path", "unmatched")
            REQUESTS.labels(scope.get("method", ""), path, str(status_holder["status"])).inc()
            LATENCY.labels(scope.get("method", ""), path).observe(time.perf_counter() - started)


class _BodyTooLarge(Exception):
    pass


def startup_hooks() -> list[StartupHook]:
    """Feature start-up steps run once the container exists (admin account, background tasks)."""
    from railbook.services.members.blocklist import load_blocklist_hook
    from railbook.services.members.service import ensure_admin_hook

    hooks: list[StartupHook] = [ensure_admin_hook, load_blocklist_hook]
    return hooks


def create_app(
    settings: Settings | None = None,
    *,
    container: Container | None = None,
    run_background: bool = False,
    freeze_heap: bool = False,
) -> FastAPI:
    """Build the app. With ``container`` the caller owns it; otherwise the lifespan builds and closes one.
    ``run_background`` starts the in-process workers (``railbook serve``); ``freeze_heap`` takes the
    start-up heap out of the garbage collector's reach once ready (server processes)."""
    settings = settings or (container.settings if container else Settings())
    configure_logging(settings.log_level, json=settings.log_json)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = container is None
        c = container or await build_container(settings)
        app.state.container = c
        for hook in startup_hooks():
            await hook(c)
        background = None
        if run_background:
            from railbook.workers.runtime import start_background

            background = await start_background(c)
        if freeze_heap:
            freeze_startup_heap()
        try:
            yield
        finally:
            if background is not None:
                await background.stop()
            if own:
                await c.close()

    app = FastAPI(
        title="railbook",
        version="1.0",
        description="Railway ticketing in the style of China Railway 12306.",
        lifespan=lifespan,
        # Metrics are Prometheus (GuardMiddleware, /metrics); FastAPI's OpenTelemetry hooks would
        # only ask, on every request, whether a provider was configured since.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    install_error_handlers(app)
    from railbook.api.routers import admin, health, members, orders, search, timetable, web

    app.include_router(health.router)
    # Search first among the API routers: it carries most of the traffic, and routes are matched in order.
    app.include_router(search.router)
    app.include_router(members.router)
    app.include_router(admin.router)
    app.include_router(orders.router)
    from railbook.api.routers import payments

    app.include_router(payments.router)
    app.include_router(timetable.router)
    app.include_router(web.router)
    web.mount_static(app)
    app.add_middleware(GuardMiddleware)
    return app


__all__ = ["HTTP_CODES", "create_app"]
