"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text

from railbook.api.deps import ContainerDep
from railbook.api.errors import OUTAGE_RETRY_AFTER_S, error_response
from railbook.bootstrap import Container
from railbook.metrics import exposition

router = APIRouter(tags=["operations"])

# A store that is down refuses at once; one that is up but busy (the embedded SQLite file while a
# commit holds it) can take seconds to answer a probe, and is still ready.
READY_PROBE_TIMEOUT_S = 5.0
EMBEDDED = "embedded"


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive (no store is asked)."""
    return {"status": "ok"}


def _probes(container: Container) -> dict[str, Callable[[], Awaitable[object]] | None]:
    """Each dependency and how to ask it; None: in process (embedded), nothing to reach."""

    engine = container.engine

    async def database() -> object:
        async with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                # The embedded file: a connection is the probe. A statement would begin a write
                # transaction (``BEGIN IMMEDIATE``) and queue behind the committer's.
                return await conn.get_raw_connection()
            return await conn.execute(text("SELECT 1"))

    redis = container.redis
    if redis is None:
        return {"database": database, "cache": None, "queue": None}
    from railbook.adapters.redis.stream import STREAMS_SET

    # The cache and the order queue live in Redis: the queue probe reads the streams' registry.
    return {"database": database, "cache": redis.ping, "queue": lambda: redis.exists(STREAMS_SET)}


@router.get("/readyz")
async def readyz(container: ContainerDep) -> JSONResponse:
    """Database, cache and queue reachable: 200 with each one's status (``ok``, or ``embedded`` for
    the in-process cache and queue), else 503 with the same map, ``down: <error>`` for what is down."""
    probes = _probes(container)

    async def check(probe: Callable[[], Awaitable[object]] | None) -> str:
        if probe is None:
            return EMBEDDED
        try:
            await asyncio.wait_for(probe(), timeout=READY_PROBE_TIMEOUT_S)
        except Exception as exc:  # any failure means "not ready"
            return f"down: {type(exc).__name__}"
        return "ok"

    results = await asyncio.gather(*(check(p) for p in probes.values()))
    checks = dict(zip(probes, results, strict=True))
    if all(v in ("ok", EMBEDDED) for v in checks.values()):
        return JSONResponse({"status": "ready", "checks": checks})
    return error_response(
        503, "UNAVAILABLE", "Not ready.", checks, {"Retry-After": str(OUTAGE_RETRY_AFTER_S)}
    )


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}}}},
)
async def metrics(container: ContainerDep) -> Response:
    """Prometheus text format: HTTP and business counters, and the queue and waitlist figures read
    from the stores (see ``railbook.metrics``)."""
    return Response(await exposition(container), media_type=CONTENT_TYPE_LATEST)
