"""HTTP endpoints: admin (API.md)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/api/v1")
