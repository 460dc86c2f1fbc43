"""First start of a site (``railbook serve``): sample timetable, sale window, admin and demo accounts."""

from __future__ import annotations

import copy
from typing import Any

import structlog

from railbook.services.catalog.imports import catalog_is_empty
from railbook.services.catalog.sample import load_sample_network
from railbook.services.members import service as members
from railbook.services.sales.loading import load_open_days
from railbook.services.sales.opening import open_window

log = structlog.get_logger(__name__)

DEFAULT_ADMIN_MOBILE = "13800000000"
DEFAULT_ADMIN_PASSWORD = "railbook-admin"


async def prepare_site(container: Any, *, load_sample: bool) -> dict[str, Any]:
    """Make a fresh site usable at once; returns the lines ``railbook serve`` prints."""
    lines: list[str] = []
    if load_sample:
        if await catalog_is_empty(container):
            result = await load_sample_network(container)
            lines.append(
                f"sample timetable loaded: {result['stations_added']} stations, "
                f"{result['trains_created']} trains"
            )
    opened = await open_window(container)
    await load_open_days(container)
    if opened["opened"]:
        days = sorted({o["date"] for o in opened["opened"]})
        lines.append(f"opened {len(opened['opened'])} train-days for sale ({days[0]} .. {days[-1]})")

    settings = container.settings
    if settings.admin_mobile and settings.admin_password:
        await members.ensure_admin_hook(container)
        lines.append(f"admin: {settings.admin_mobile} (password from RAILBOOK_ADMIN_PASSWORD)")
    elif settings.embedded:
        # A demo site needs an administrator; without settings use a well-known one and say so.
        demo = copy.copy(container)
        demo.settings = settings.model_copy(
            update={"admin_mobile": DEFAULT_ADMIN_MOBILE, "admin_password": DEFAULT_ADMIN_PASSWORD}
        )
        await members.ensure_admin_hook(demo)
        lines.append(
            f"admin: {DEFAULT_ADMIN_MOBILE} / {DEFAULT_ADMIN_PASSWORD} (demo default; set "
            "RAILBOOK_ADMIN_MOBILE and RAILBOOK_ADMIN_PASSWORD to choose your own)"
        )
    else:
        lines.append("no admin account configured (set RAILBOOK_ADMIN_MOBILE and RAILBOOK_ADMIN_PASSWORD)")

    ensure_demo = getattr(members, "ensure_demo_member", None)
    if ensure_demo is not None:
        mobile, password = await ensure_demo(container)
        lines.append(f"demo passenger: {mobile} / {password}")
    lines.append("open the passenger pages at / and the admin pages at /admin")
    return {"lines": lines}
