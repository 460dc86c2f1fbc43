"""ASGI factories for uvicorn (``--factory``): settings come from the environment. The factory decides
whether the process also runs the background roles (order committer, scheduler, expiry, outbox relay)."""

from __future__ import annotations

from fastapi import FastAPI

from railbook.api.app import create_app
from railbook.config import Settings


def serve_app() -> FastAPI:
    """API plus every background role in this same process (``railbook serve`` in embedded mode, where
    the order queue lives in the process)."""
    return create_app(Settings(), run_background=True, freeze_heap=True)


def api_app() -> FastAPI:
    """API only (``railbook api``, and each API process of ``railbook serve`` in distributed mode, beside
    the one process that runs the background roles)."""
    return create_app(Settings(), freeze_heap=True)
