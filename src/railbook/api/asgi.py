"""ASGI factories for uvicorn (``--factory``): settings come from the environment."""

from __future__ import annotations

from fastapi import FastAPI

from railbook.api.app import create_app
from railbook.config import Settings


def serve_app() -> FastAPI:
    """API plus the in-process worker and scheduler (``railbook serve``)."""
    return create_app(Settings(), run_background=True, freeze_heap=True)


def api_app() -> FastAPI:
    """API only (``railbook api``)."""
    return create_app(Settings(), freeze_heap=True)
