"""Loading open train-days into the allocator from the system of record: on demand (a day missing
after a Redis wipe), at start-up, and as a full rebuild."""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass, replace

import structlog

from railbook.kit.clock import beijing_today, utcnow
from railbook.services.ports import DayLayout
from railbook.services.sales.ports import SalesContext
from railbook.services.sales.reconcile import reconcile_day
from railbook.services.sales.releases import order_release_id, ticket_release_id

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class DaySnapshot:
    """A train-day as the system of record has it, and the releases that snapshot already reflects."""

    layout: DayLayout
    cancelled_orders: tuple[str, ...]  # CANCEL orders whose seat release is not confirmed yet
    returned_tickets: tuple[str, ...]  # REFUNDED/CHANGED tickets whose release is not confirmed yet


async def _snapshots(
    container: SalesContext, date: dt.date | None, train_code: str | None
) -> list[DaySnapshot]:
    """Snapshots of the matching days, each consistent with itself (one database snapshot per day)."""
    snapshots = []
    for record in await container.day_records.snapshots(date, train_code):
        released = [order_release_id(o) for o in record.cancelled_orders] + [
            ticket_release_id(t, st) for t, st in record.returned_tickets
        ]
        snapshots.append(
            DaySnapshot(
                replace(record.layout, released=tuple(released)),
                record.cancelled_orders,
                tuple(t for t, _ in record.returned_tickets),
            )
        )
    return snapshots


async def _confirm_releases(container: SalesContext, snapshot: DaySnapshot) -> None:
    """Stamp ``released_at`` on the releases a freshly installed snapshot already reflects.

    Invariant: a release is applied to an allocator copy at most once. The release markers of the
    allocator die with its data (a Redis wipe, a restart of the embedded process), so after a day is
    rebuilt from the system of record, a retried release of a cancel or refund that the rebuild
    already counted would free a seat a newer order may hold. The install itself sets the markers of
    those releases (``DayLayout.released``, in the same atomic call), so a retry already in flight
    changes nothing; stamping here only spares the retry job the work. Only what the installed
    snapshot saw is stamped; a release committed after the snapshot stays pending and is retried.
    """
    if not snapshot.cancelled_orders and not snapshot.returned_tickets:
        return
    records = container.day_records
    await records.confirm_releases(snapshot.cancelled_orders, snapshot.returned_tickets, utcnow())
    log.info(
        "train_day_releases_absorbed",
        train_code=snapshot.layout.train_code,
        date=snapshot.layout.date.isoformat(),
        orders=len(snapshot.cancelled_orders),
        tickets=len(snapshot.returned_tickets),
    )


async def _install(container: SalesContext, snapshot: DaySnapshot, *, replace: bool) -> bool:
    """Load a snapshot into the allocator; the releases it reflects are confirmed if it was installed."""
    installed = await container.allocator.load_day(snapshot.layout, replace=replace)
    if installed:
        await _confirm_releases(container, snapshot)
    return installed


async def ensure_day_loaded(container: SalesContext, train_code: str, date: dt.date) -> bool:
    """Make sure the allocator holds an open train-day (e.g. after a Redis wipe); False if it is not open.

    Loading is ``replace=False``: when two processes race, the first load wins and the second is a
    no-op, so a day that has started selling is never overwritten by a stale copy. Within a process,
    one load per day runs at a time (a crowd meeting an empty allocator waits for it).
    """
    if await container.allocator.is_loaded(train_code, date):
        return True
    flights = container.day_loads
    key = (train_code, date)
    task = flights.get(key)
    if task is None:
        # A task of its own: a requester that gives up (cancelled) does not cancel the others' load.
        task = asyncio.create_task(_load_day(container, train_code, date), name=f"load {train_code} {date}")
        flights[key] = task
        task.add_done_callback(lambda done: _landed(flights, key, done))
    return await asyncio.shield(task)


def _landed(
    flights: dict[tuple[str, dt.date], asyncio.Task[bool]], key: tuple[str, dt.date], task: asyncio.Task[bool]
) -> None:
    if flights.get(key) is task:
        del flights[key]
    if not task.cancelled():
        task.exception()  # retrieved: the waiters re-raise it, nobody logs it as lost


async def _load_day(container: SalesContext, train_code: str, date: dt.date) -> bool:
    snapshots = await _snapshots(container, date, train_code)
    if not snapshots:
        return False
    await _install(container, snapshots[0], replace=False)
    return True


async def open_days(container: SalesContext, *, today: dt.date | None = None) -> list[tuple[str, dt.date]]:
    """Every open train-day from today (in Beijing) on, as ``(train_code, date)``."""
    days = await container.day_records.open_days(None, None, from_date=today or beijing_today())
    return [(d.train_code, d.date) for d in days]


async def load_open_days(container: SalesContext, *, today: dt.date | None = None) -> int:
    """Make sure every open train-day from today (in Beijing) on is in the allocator; returns how many
    were loaded."""
    loaded = 0
    for code, date in await open_days(container, today=today):
        if await container.allocator.is_loaded(code, date):
            continue
        try:
            if await ensure_day_loaded(container, code, date):
                loaded += 1
        except ValueError as exc:  # one inconsistent train-day must not keep the others off sale
            log.error("train_day_not_loadable", train_code=code, date=date.isoformat(), error=str(exc))
    if loaded:
        log.info("train_days_loaded", count=loaded)
    return loaded


async def rebuild_inventory(container: SalesContext, date: dt.date, train_code: str | None = None) -> int:
    """Replace the allocator's state of a day (or one train-day) with what the system of record says.

    Best run when the order queue is drained: allocations accepted but not yet committed are not in
    the database, so the rebuilt copy does not have them, and their orders end ``FAILURE`` /
    ``LOST_IN_FAILOVER`` (their load epoch is gone) instead of being committed.
    """
    snapshots = await _snapshots(container, date, train_code)
    for snapshot in snapshots:
        await _install(container, snapshot, replace=True)
        # Orders committed between the snapshot and the install are put back (their committers may
        # have checked the epoch before the install, so none of them repairs it).
        await reconcile_day(container, snapshot.layout.train_code, snapshot.layout.date)
    return len(snapshots)
