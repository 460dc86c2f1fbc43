"""Sale-day names other features import from here; the use cases live in ``opening``, ``loading``,
``reconcile``, ``inventory``, ``window`` and ``releases``."""

from __future__ import annotations

import datetime as dt
from typing import Any

from railbook.adapters.db.day_records import (  # kept for other features
    ACTIVE_TICKET_STATUSES,
    SqlDayRecords,
    active_masks,
)
from railbook.services.sales import loading, opening, reconcile
from railbook.services.sales.releases import order_release_id, ticket_release_id  # kept for other features
from railbook.services.sales.window import check_on_sale, sale_window, today  # kept for other features

__all__ = [
    "ACTIVE_TICKET_STATUSES",
    "active_masks",
    "check_on_sale",
    "ensure_day_loaded",
    "load_open_days",
    "open_days",
    "open_sale_days",
    "open_window",
    "order_release_id",
    "reconcile_day",
    "sale_window",
    "ticket_release_id",
    "today",
]


class _WithDayRecords:
    """A context of another feature that predates ``day_records`` (kept for other features): the same
    parts, plus a day-record store over its sessionmaker."""

    def __init__(self, container: Any) -> None:
        self._container = container
        self.day_records = SqlDayRecords(container.sessionmaker)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._container, name)


def _sales_context(container: Any) -> Any:
    return container if hasattr(container, "day_records") else _WithDayRecords(container)


# kept for other features
async def ensure_day_loaded(container: Any, train_code: str, date: dt.date) -> bool:
    """``loading.ensure_day_loaded`` for any context with a sessionmaker."""
    return await loading.ensure_day_loaded(_sales_context(container), train_code, date)


# kept for other features
async def reconcile_day(container: Any, train_code: str, date: dt.date) -> reconcile.Reconciliation:
    """``reconcile.reconcile_day`` for any context with a sessionmaker."""
    return await reconcile.reconcile_day(_sales_context(container), train_code, date)


# kept for other features
async def load_open_days(container: Any) -> int:
    """``loading.load_open_days`` for any context with a sessionmaker."""
    return await loading.load_open_days(_sales_context(container))


# kept for other features
async def open_days(container: Any) -> list[tuple[str, dt.date]]:
    """``loading.open_days`` for any context with a sessionmaker."""
    return await loading.open_days(_sales_context(container))


# kept for other features
async def open_sale_days(container: Any, dates: list[dt.date]) -> dict[str, Any]:
    """``opening.open_sale_days`` (the container must carry the sale-day stores)."""
    return await opening.open_sale_days(container, dates)


# kept for other features
async def open_window(container: Any) -> dict[str, Any]:
    """``opening.open_window`` (the container must carry the sale-day stores)."""
    return await opening.open_window(container)
