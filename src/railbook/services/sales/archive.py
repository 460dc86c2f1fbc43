"""Archiving past service dates (``railbook archive --before D``): their records leave the system of
record for files, so the per-day tables hold only the dates that still matter.

Never loses an accepted order: a date is archived only when every order of it is final (no order
queued, unpaid, or cancelled with its seats not yet confirmed back), no refunded or changed ticket
waits for its seat to go back, no change or waitlist entry of it is pending, no event of its orders
waits to be published, and every train of it has reached its last stop. One date refused refuses
the whole run before anything is touched (the operator sees every reason at once); a date that
turns out refused once detached is left as it was. Archiving again is a no-op."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from railbook.services.sales.ports import ArchiveRefused, DayArchive


async def archive_before(
    store: DayArchive, *, before: dt.date, out: Path, today: dt.date
) -> dict[dt.date, dict[str, int]]:
    """Archive every date before ``before`` under ``out``; returns the rows written per date and table.
    Raises ``ArchiveRefused`` with every reason when a date cannot go yet."""
    if before > today:
        late = f"--before {before.isoformat()} is after today ({today.isoformat()})"
        raise ArchiveRefused([f"{late}: those days are still on sale"])
    dates = await store.dates(before)
    reasons = [reason for date in dates for reason in await store.refusals(date, today)]
    if reasons:
        raise ArchiveRefused(reasons)
    done: dict[dt.date, dict[str, int]] = {}
    for date in dates:
        await store.detach(date, today)
        done[date] = await store.export(date, out)
        await store.drop(date)
    return done
