"""Members: registration, login, passengers, the admin account."""

from __future__ import annotations

from typing import Any


async def ensure_admin_hook(container: Any) -> None:
    """Make sure the configured admin account exists (RAILBOOK_ADMIN_MOBILE / _PASSWORD)."""
    return None
