"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from railbook.api.deps import ContainerDep
from railbook.api.errors import OUTAGE_RETRY_AFTER_S, error_response

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive (no store is asked)."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(container: ContainerDep) -> JSONResponse:
    """Database, cache and queue reachable: 200, else 503 with what is down."""
    checks: dict[str, str] = {}

    async def db() -> None:
        async with container.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def cache() -> None:
        if container.redis is not None:
            await container.redis.ping()

    for name, probe in (("database", db), ("redis", cache)):
        try:
            await asyncio.wait_for(probe(), timeout=2.0)
            checks[name] = "ok" if name == "database" or container.redis is not None else "embedded"
        except Exception as exc:  # any failure means "not ready"
            checks[name] = f"down: {type(exc).__name__}"
    ready = all(v in ("ok", "embedded") for v in checks.values())
    if ready:
        return JSONResponse({"status": "ready", "checks": checks})
    return error_response(
        503, "UNAVAILABLE", "Not ready.", checks, {"Retry-After": str(OUTAGE_RETRY_AFTER_S)}
    )


@router.get("/metrics")
async def metrics() -> Response:
    """Prometheus text format."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
