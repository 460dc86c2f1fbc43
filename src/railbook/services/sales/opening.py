"""Opening sale days: a date copies the timetable into the per-day tables and loads the allocator.

The system of record for a train-day is PostgreSQL (or SQLite): ``daily_train`` and its stops,
seats and per-pair prices are frozen when the day opens, so later timetable edits affect only days
opened afterwards. The allocator (Redis or in-process) holds a copy that can always be rebuilt.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import structlog

from railbook.domain.pricing import pair_fares
from railbook.domain.seating import SEAT_LETTERS, CarriageSpec, class_seats
from railbook.kit.clock import utcnow
from railbook.services.ports import Allocator, DayLayout
from railbook.services.sales.ports import OpeningContext, SaleDayStore, TimetableTrain
from railbook.services.sales.window import sale_window

log = structlog.get_logger(__name__)

LOAD_CONCURRENCY = 16


async def _timetable(store: SaleDayStore) -> list[TimetableTrain]:
    """The trains a day can open (two stops or more and some carriages), with their fares."""
    result = [t for t in await store.timetable() if len(t.stops) >= 2 and t.carriages]
    for t in result:
        kms = [s["km"] for s in t.stops]
        for seat_class in sorted({c.seat_class for c in t.carriages}):
            t.fares[seat_class] = pair_fares(t.kind, seat_class, kms)
    return result


def _capacity(carriages: Iterable[CarriageSpec]) -> dict[str, int]:
    capacity: dict[str, int] = defaultdict(int)
    for c in carriages:
        capacity[c.seat_class] += c.rows * len(SEAT_LETTERS[c.seat_class])
    return capacity


async def _open_one_date(
    store: SaleDayStore, timetable: Sequence[TimetableTrain], date: dt.date
) -> tuple[list[TimetableTrain], list[str]]:
    """Freeze every timetable train not yet open on ``date``; returns (opened, already open codes)."""
    await store.prepare_date(date)
    async with store.opening() as tx:
        existing = await tx.open_codes(date)
        candidates = [t for t in timetable if t.code not in existing]
        if not candidates:
            return [], sorted(existing)
        now = utcnow()
        ids = await tx.insert_days(candidates, date, now)
        opened = [t for t in candidates if t.code in ids]
        # A concurrent opener (another scheduler) may have won some rows: those are already open.
        lost = [t.code for t in candidates if t.code not in ids]
        if not opened:
            return [], sorted(existing | set(lost))
        await tx.copy_stops(
            [
                {"daily_train_id": ids[t.code], "service_date": date, **stop}
                for t in opened
                for stop in t.stops
            ]
        )
        await tx.copy_seats([ids[t.code] for t in opened])
        pair_rows: list[tuple[Any, ...]] = []
        for t in opened:
            capacity = _capacity(t.carriages)
            daily_id = ids[t.code]
            for seat_class, fares in t.fares.items():
                cap = capacity[seat_class]
                pair_rows.extend((daily_id, seat_class, i, j, cap, fen, now) for (i, j), fen in fares.items())
        await tx.write_pair_inventory(pair_rows)
    return opened, sorted(existing | set(lost))


def fresh_layout(
    train_code: str, date: dt.date, n_stops: int, carriages: Sequence[CarriageSpec]
) -> DayLayout:
    """The layout of a train-day nobody has bought from yet (every mask zero)."""
    seats = {cls: class_seats(list(carriages), cls) for cls in sorted({c.seat_class for c in carriages})}
    return DayLayout(train_code, date, n_stops, seats, {cls: [0] * len(s) for cls, s in seats.items()})


async def _load_fresh_days(allocator: Allocator, date: dt.date, trains: Sequence[TimetableTrain]) -> None:
    """Load newly opened train-days into the allocator, a few at a time (each load is one atomic call)."""
    pending = list(trains)
    while pending:
        batch, pending = pending[:LOAD_CONCURRENCY], pending[LOAD_CONCURRENCY:]
        await asyncio.gather(
            *(allocator.load_day(fresh_layout(t.code, date, len(t.stops), t.carriages)) for t in batch)
        )


async def _trust_fresh_markers(
    container: OpeningContext, date: dt.date, trains: Sequence[TimetableTrain]
) -> None:
    """A train-day opened just now has no order yet, so its (empty) set of duplicate-order markers is
    complete: say so, and its first orders need no database read to be told apart from duplicates.
    (A day loaded any other way, e.g. after a loss of Redis data, has its markers restored from the
    database first; see ``booking.restore_day_markers``.)"""
    for t in trains:
        await container.guard.trust_markers(t.code, date)


async def open_sale_days(container: OpeningContext, dates: list[dt.date]) -> dict[str, Any]:
    """Open every timetable train on each date (idempotent) and load the new train-days into the allocator."""
    opened: list[dict[str, str]] = []
    already: list[dict[str, str]] = []
    started = time.perf_counter()
    loading = 0.0
    store = container.sale_days
    timetable = await _timetable(store)
    for date in sorted(set(dates)):
        new, old = await _open_one_date(store, timetable, date)
        opened.extend({"date": date.isoformat(), "train_code": t.code} for t in new)
        already.extend({"date": date.isoformat(), "train_code": code} for code in old)
        load_started = time.perf_counter()
        await _load_fresh_days(container.allocator, date, new)
        loading += time.perf_counter() - load_started
        await _trust_fresh_markers(container, date, new)
    if opened:
        log.info(
            "sale_days_opened",
            train_days=len(opened),
            dates=sorted({o["date"] for o in opened}),
            seconds=round(time.perf_counter() - started, 2),
            allocator_seconds=round(loading, 2),
        )
    return {"opened": opened, "already_open": already}


async def open_window(container: OpeningContext, *, today: dt.date | None = None) -> dict[str, Any]:
    """Open every day of the sale window (today .. today + SALE_DAYS_AHEAD - 1, Beijing days)."""
    return await open_sale_days(container, sale_window(container.settings, today))
