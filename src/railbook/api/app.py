"""FastAPI app factory. The container (engine, Redis, allocator, ...) is built in the lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from railbook.api.errors import HTTP_CODES, install_error_handlers
from railbook.api.middleware import MAX_BODY_BYTES, GuardMiddleware
from railbook.api.openapi import install_openapi
from railbook.bootstrap import Container, build_container, freeze_startup_heap
from railbook.config import Settings
from railbook.logs import configure_logging

StartupHook = Callable[[Container], Awaitable[Any]]


def startup_hooks() -> list[StartupHook]:
    """Feature start-up steps run once the container exists (admin account, background tasks)."""
    from railbook.services.members.blocklist import load_blocklist_hook
    from railbook.services.members.service import ensure_admin_hook

    hooks: list[StartupHook] = [ensure_admin_hook, load_blocklist_hook, _follow_search_changes]
    return hooks


async def _follow_search_changes(container: Container) -> None:
    """Search in this process follows the sales other processes commit (the change feed)."""
    container.search.listen_for_changes()


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
    configure_logging(settings.log_level, json=settings.json_logs)

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
    install_openapi(app)
    app.add_middleware(
        GuardMiddleware, max_in_flight=settings.max_in_flight, queue_wait_s=settings.queue_wait_seconds
    )
    return app


__all__ = ["HTTP_CODES", "MAX_BODY_BYTES", "GuardMiddleware", "create_app"]
