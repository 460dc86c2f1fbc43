"""Inventory of open train-days as the system of record has it, and its comparison with the allocator."""

from __future__ import annotations

import datetime as dt
from typing import Any

from railbook.domain.errors import TrainDayNotFound
from railbook.domain.inventory import diff_masks
from railbook.domain.segments import pair_remaining, sold_per_segment
from railbook.kit.clock import beijing_today
from railbook.services.sales.ports import SalesContext


async def check_inventory(
    container: SalesContext, date: dt.date | None = None, train_code: str | None = None
) -> list[str]:
    """Differences between the allocator and the system of record (empty when they agree)."""
    since = None if date else beijing_today()
    layouts = await container.day_records.layouts(date, train_code, from_date=since)
    drift: list[str] = []
    for layout in layouts:
        label = f"{layout.train_code} {layout.date.isoformat()}"
        if not await container.allocator.is_loaded(layout.train_code, layout.date):
            drift.append(f"{label}: not loaded in the allocator")
            continue
        actual = await container.allocator.masks(layout.train_code, layout.date)
        drift.extend(f"{label} {line}" for line in diff_masks(layout.masks, actual))
    return drift


async def day_inventory(container: SalesContext, train_code: str, date: dt.date) -> dict[str, Any]:
    """A train-day's inventory from the system of record, in the API.md shape."""
    found = await container.day_records.inventory(train_code, date)
    if found is None:
        raise TrainDayNotFound(
            f"{train_code} is not open on {date.isoformat()}.",
            details={"train_code": train_code, "date": date.isoformat()},
        )
    layout, stations = found
    classes = {
        cls: {
            "seats": len(masks),
            "sold_per_segment": sold_per_segment(layout.n_stops, masks),
            "remaining": pair_remaining(layout.n_stops, masks),
        }
        for cls, masks in layout.masks.items()
    }
    return {
        "train_code": train_code,
        "date": date.isoformat(),
        "stations": stations,
        "classes": classes,
    }
