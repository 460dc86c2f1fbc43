"""Passenger and admin pages (server-rendered)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.staticfiles import StaticFiles

router = APIRouter(include_in_schema=False)
WEB_DIR = Path(__file__).resolve().parents[2] / "web"


def mount_static(app: FastAPI) -> None:
    app.mount("/static", StaticFiles(directory=WEB_DIR / "static"), name="static")
