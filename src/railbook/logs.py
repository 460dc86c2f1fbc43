"""Log set-up, once per process: structlog lines with plain one-block tracebacks (no locals dumps).

Every line carries what is bound in structlog's context variables: the guard binds ``request_id`` for
the whole of a request (``api.middleware``), so each line a request causes names it. Lines of the
standard library's loggers (uvicorn, SQLAlchemy, asyncio) go through the same processors and
renderer, so they carry it too and share the format: JSON lines for collectors, or console lines for
people (``Settings.json_logs``)."""

from __future__ import annotations

import logging
import sys

import structlog

_configured = False
# The ASGI server's loggers, which it gives handlers and formats of their own.
SERVER_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")


def configure_logging(level: str = "info", *, json: bool = False) -> None:
    """Console lines for people, JSON lines (``json=True``) for collectors; idempotent."""
    global _configured
    if _configured:
        _through_root(SERVER_LOGGERS)  # a server configured after us (uvicorn) set its own handlers
        return
    _configured = True
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    renderer: structlog.typing.Processor
    if json:
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(
            colors=False, exception_formatter=structlog.dev.plain_traceback
        )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    tail: list[structlog.typing.Processor] = [structlog.processors.format_exc_info] if json else []
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tail, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    for noisy in ("alembic", "sqlalchemy", "httpx", "asyncio"):
        logging.getLogger(noisy).setLevel(max(numeric, logging.WARNING))
    _through_root(SERVER_LOGGERS)
    structlog.configure(
        processors=[*shared, *tail, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )


def _through_root(names: tuple[str, ...]) -> None:
    """These loggers' lines go through the root handler: the same format and context as ours."""
    for name in names:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
