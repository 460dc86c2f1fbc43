"""Sale days: opening a date copies the timetable into the per-day tables and loads the allocator.

The system of record for a train-day is PostgreSQL (or SQLite): ``daily_train`` and its stops,
seats and per-pair prices are frozen when the day opens; a seat's state is derived from the
active tickets (UNPAID or PAID) that name it. The allocator (Redis or in-process) holds a copy
that can always be rebuilt from here.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, runtime_checkable

import structlog
from sqlalchemy import bindparam, insert, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from railbook.adapters.db.models import (
    Carriage,
    DailyPairInventory,
    DailySeat,
    DailyTrain,
    DailyTrainStop,
    Order,
    Station,
    Ticket,
    Train,
    TrainStop,
)
from railbook.config import Settings
from railbook.domain.errors import DateNotOnSale, TrainDayNotFound
from railbook.domain.inventory import diff_masks
from railbook.domain.pricing import pair_fares
from railbook.domain.seating import SEAT_LETTERS, CarriageSpec, Seat, class_seats, journey_mask
from railbook.domain.segments import pair_remaining, sold_per_segment
from railbook.kit.clock import utcnow
from railbook.services.ports import Allocator, DayLayout, SeatHold

log = structlog.get_logger(__name__)

ACTIVE_TICKET_STATUSES = ("UNPAID", "PAID")
RETURNED_TICKET_STATUSES = ("REFUNDED", "CHANGED")
LOAD_CONCURRENCY = 16


class SalesContext(Protocol):
    """What sale-day use cases need from the composition root."""

    settings: Settings
    sessionmaker: async_sessionmaker[AsyncSession]
    allocator: Allocator
    # Train-day loads in flight in this process: one load per day at a time.
    day_loads: dict[tuple[str, dt.date], asyncio.Task[bool]]


class MarkerTrust(Protocol):
    async def trust_markers(self, train_code: str, date: dt.date) -> None: ...


class OpeningContext(SalesContext, Protocol):
    """Opening sale days also tells the order guard that a fresh day's duplicate markers are complete."""

    @property
    def guard(self) -> MarkerTrust: ...


def order_release_id(order_id: str) -> str:
    """The allocator release id of a cancelled order's seats."""
    return f"cancel:{order_id}"


def ticket_release_id(ticket_id: str, status: str) -> str:
    """The allocator release id of a refunded (or changed) ticket's seat."""
    return f"{'refund' if status == 'REFUNDED' else 'change'}:{ticket_id}"


def today() -> dt.date:
    """The calendar day sales are counted from."""
    return dt.date.today()


def sale_window(settings: Settings, on: dt.date | None = None) -> list[dt.date]:
    """The days on sale: today and the next SALE_DAYS_AHEAD - 1 days."""
    first = on or today()
    return [first + dt.timedelta(days=i) for i in range(settings.sale_days_ahead)]


def check_on_sale(settings: Settings, dates: Iterable[dt.date]) -> None:
    """422 DATE_NOT_ON_SALE for any date outside the sale window."""
    window = sale_window(settings)
    for d in dates:
        if d < window[0] or d > window[-1]:
            raise DateNotOnSale(
                f"{d.isoformat()} is not on sale (sale window {window[0]} .. {window[-1]}).",
                details={
                    "date": d.isoformat(),
                    "first": window[0].isoformat(),
                    "last": window[-1].isoformat(),
                },
            )


class _TimetableTrain:
    """One train of the timetable as it will be frozen into a day: stops, carriages and fares."""

    __slots__ = ("carriages", "code", "fares", "kind", "stops", "train_id")

    def __init__(self, train_id: int, code: str, kind: str) -> None:
        self.train_id = train_id
        self.code = code
        self.kind = kind
        self.stops: list[dict[str, Any]] = []
        self.carriages: list[CarriageSpec] = []
        self.fares: dict[str, dict[tuple[int, int], int]] = {}


async def _load_timetable(session: AsyncSession) -> list[_TimetableTrain]:
    trains = {
        row.id: _TimetableTrain(row.id, row.code, row.kind)
        for row in (
            await session.execute(select(Train.id, Train.code, Train.kind).order_by(Train.code))
        ).all()
    }
    stops = await session.execute(
        select(
            TrainStop.train_id,
            TrainStop.stop_index,
            TrainStop.station_id,
            Station.name,
            TrainStop.arrives,
            TrainStop.departs,
            TrainStop.day,
            TrainStop.km,
        )
        .join(Station, Station.id == TrainStop.station_id)
        .order_by(TrainStop.train_id, TrainStop.stop_index)
    )
    for r in stops.all():
        trains[r.train_id].stops.append(
            {
                "stop_index": r.stop_index,
                "station_id": r.station_id,
                "station_name": r.name,
                "arrives": r.arrives,
                "departs": r.departs,
                "day": r.day,
                "km": r.km,
            }
        )
    carriages = await session.execute(
        select(Carriage.train_id, Carriage.carriage_index, Carriage.seat_class, Carriage.rows).order_by(
            Carriage.train_id, Carriage.carriage_index
        )
    )
    for c in carriages.all():
        trains[c.train_id].carriages.append(CarriageSpec(c.carriage_index, c.seat_class, c.rows))
    result = [t for t in trains.values() if len(t.stops) >= 2 and t.carriages]
    for t in result:
        kms = [s["km"] for s in t.stops]
        for seat_class in sorted({c.seat_class for c in t.carriages}):
            t.fares[seat_class] = pair_fares(t.kind, seat_class, kms)
    return result


def _insert_ignoring_duplicates(session: AsyncSession) -> Any:
    return pg_insert if session.bind.dialect.name == "postgresql" else sqlite_insert


# Seats are numbered per class in (carriage, row, letter) order, which is the order of
# domain.seating.class_seats because every class's letters are listed in sorted order.
_COPY_SEATS = text("""
INSERT INTO daily_seat (daily_train_id, seat_class, seat_index, carriage, seat_row, letter)
SELECT d.id, s.seat_class,
       row_number() OVER (
           PARTITION BY d.id, s.seat_class ORDER BY c.carriage_index, s.seat_row, s.letter) - 1,
       c.carriage_index, s.seat_row, s.letter
FROM daily_train d
JOIN carriage c ON c.train_id = d.train_id
JOIN seat s ON s.carriage_id = c.id
WHERE d.id IN :ids
""").bindparams(bindparam("ids", expanding=True))


async def _write_pair_inventory(session: AsyncSession, rows: list[tuple[Any, ...]]) -> None:
    """Bulk-write (daily_train_id, seat_class, from, to, remaining, price, refreshed_at) rows:
    COPY on PostgreSQL, executemany elsewhere."""
    if not rows:
        return
    columns = [
        "daily_train_id",
        "seat_class",
        "from_index",
        "to_index",
        "remaining",
        "price_fen",
        "refreshed_at",
    ]
    if session.bind.dialect.name == "postgresql":
        conn = await session.connection()
        raw = await conn.get_raw_connection()
        await raw.driver_connection.copy_records_to_table(  # type: ignore[union-attr]
            "daily_pair_inventory", records=rows, columns=columns
        )
        return
    await session.execute(insert(DailyPairInventory), [dict(zip(columns, r, strict=True)) for r in rows])


async def _open_one_date(
    session: AsyncSession, timetable: Sequence[_TimetableTrain], date: dt.date
) -> tuple[list[_TimetableTrain], list[str]]:
    """Freeze every timetable train not yet open on ``date``; returns (opened, already open codes)."""
    async with session.begin():
        existing = set(
            (await session.execute(select(DailyTrain.train_code).where(DailyTrain.service_date == date)))
            .scalars()
            .all()
        )
        candidates = [t for t in timetable if t.code not in existing]
        if not candidates:
            return [], sorted(existing)
        now = utcnow()
        ins = _insert_ignoring_duplicates(session)(DailyTrain).on_conflict_do_nothing(
            index_elements=["train_code", "service_date"]
        )
        returned = (
            await session.execute(
                ins.returning(DailyTrain.id, DailyTrain.train_code),
                [
                    {
                        "train_id": t.train_id,
                        "train_code": t.code,
                        "kind": t.kind,
                        "service_date": date,
                        "n_stops": len(t.stops),
                        "opened_at": now,
                        "carriages": [
                            {"carriage": c.carriage, "seat_class": c.seat_class, "rows": c.rows}
                            for c in t.carriages
                        ],
                    }
                    for t in candidates
                ],
            )
        ).all()
        ids = {code: daily_id for daily_id, code in returned}
        opened = [t for t in candidates if t.code in ids]
        # A concurrent opener (another scheduler) may have won some rows: those are already open.
        lost = [t.code for t in candidates if t.code not in ids]
        if not opened:
            return [], sorted(existing | set(lost))
        await session.execute(
            insert(DailyTrainStop),
            [
                {"daily_train_id": ids[t.code], "service_date": date, **stop}
                for t in opened
                for stop in t.stops
            ],
        )
        if session.bind.dialect.name == "postgresql":
            # JIT compiling this one-off query costs more (about a second) than it saves.
            await session.execute(text("SET LOCAL jit = off"))
        await session.execute(_COPY_SEATS, {"ids": [ids[t.code] for t in opened]})
        pair_rows: list[tuple[Any, ...]] = []
        for t in opened:
            capacity = _capacity(t.carriages)
            daily_id = ids[t.code]
            for seat_class, fares in t.fares.items():
                cap = capacity[seat_class]
                pair_rows.extend((daily_id, seat_class, i, j, cap, fen, now) for (i, j), fen in fares.items())
        await _write_pair_inventory(session, pair_rows)
    return opened, sorted(existing | set(lost))


def _capacity(carriages: Iterable[CarriageSpec]) -> dict[str, int]:
    capacity: dict[str, int] = defaultdict(int)
    for c in carriages:
        capacity[c.seat_class] += c.rows * len(SEAT_LETTERS[c.seat_class])
    return capacity


def fresh_layout(
    train_code: str, date: dt.date, n_stops: int, carriages: Sequence[CarriageSpec]
) -> DayLayout:
    """The layout of a train-day nobody has bought from yet (every mask zero)."""
    seats = {cls: class_seats(list(carriages), cls) for cls in sorted({c.seat_class for c in carriages})}
    return DayLayout(train_code, date, n_stops, seats, {cls: [0] * len(s) for cls, s in seats.items()})


async def _load_fresh_days(allocator: Allocator, date: dt.date, trains: Sequence[_TimetableTrain]) -> None:
    """Load newly opened train-days into the allocator, a few at a time (each load is one atomic call)."""
    pending = list(trains)
    while pending:
        batch, pending = pending[:LOAD_CONCURRENCY], pending[LOAD_CONCURRENCY:]
        await asyncio.gather(
            *(allocator.load_day(fresh_layout(t.code, date, len(t.stops), t.carriages)) for t in batch)
        )


async def _trust_fresh_markers(
    container: OpeningContext, date: dt.date, trains: Sequence[_TimetableTrain]
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
    async with container.sessionmaker() as session:
        async with session.begin():
            timetable = await _load_timetable(session)
        for date in sorted(set(dates)):
            new, old = await _open_one_date(session, timetable, date)
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


async def open_window(container: OpeningContext) -> dict[str, Any]:
    """Open every day of the sale window (today .. today + SALE_DAYS_AHEAD - 1)."""
    return await open_sale_days(container, sale_window(container.settings))


async def active_masks(session: AsyncSession, daily_train_id: int) -> dict[str, dict[int, int]]:
    """Sold-segment masks derived from active tickets: class → seat index → mask."""
    rows = await session.execute(
        select(Ticket.seat_class, Ticket.seat_index, Ticket.from_index, Ticket.to_index).where(
            Ticket.daily_train_id == daily_train_id, Ticket.status.in_(ACTIVE_TICKET_STATUSES)
        )
    )
    masks: dict[str, dict[int, int]] = defaultdict(dict)
    for r in rows.all():
        by_seat = masks[r.seat_class]
        by_seat[r.seat_index] = by_seat.get(r.seat_index, 0) | journey_mask(r.from_index, r.to_index)
    return masks


async def load_day_layout(session: AsyncSession, daily_train: DailyTrain) -> DayLayout:
    """The allocator's view of a train-day, rebuilt from the system of record."""
    rows = await session.execute(
        select(
            DailySeat.seat_class,
            DailySeat.seat_index,
            DailySeat.carriage,
            DailySeat.seat_row,
            DailySeat.letter,
        )
        .where(DailySeat.daily_train_id == daily_train.id)
        .order_by(DailySeat.seat_class, DailySeat.seat_index)
    )
    seats: dict[str, list[Seat]] = defaultdict(list)
    for r in rows.all():
        seats[r.seat_class].append(Seat(r.seat_index, r.carriage, r.seat_row, r.letter))
    sold = await active_masks(session, daily_train.id)
    masks = {
        cls: [sold.get(cls, {}).get(i, 0) for i in range(len(class_list))]
        for cls, class_list in seats.items()
    }
    return DayLayout(
        daily_train.train_code, daily_train.service_date, daily_train.n_stops, dict(seats), masks
    )


async def _daily_trains(
    session: AsyncSession, date: dt.date | None, train_code: str | None, *, from_date: dt.date | None = None
) -> list[DailyTrain]:
    query = select(DailyTrain).order_by(DailyTrain.service_date, DailyTrain.train_code)
    if date is not None:
        query = query.where(DailyTrain.service_date == date)
    if from_date is not None:
        query = query.where(DailyTrain.service_date >= from_date)
    if train_code is not None:
        query = query.where(DailyTrain.train_code == train_code)
    return list((await session.execute(query)).scalars().all())


@dataclass(frozen=True, slots=True)
class DaySnapshot:
    """A train-day as the system of record has it, and the releases that snapshot already reflects."""

    layout: DayLayout
    cancelled_orders: tuple[str, ...]  # CANCEL orders whose seat release is not confirmed yet
    returned_tickets: tuple[str, ...]  # REFUNDED/CHANGED tickets whose release is not confirmed yet


async def _day_snapshot(session: AsyncSession, daily_train: DailyTrain) -> DaySnapshot:
    """The layout and the unconfirmed releases of one day, read in the caller's (one) snapshot."""
    layout = await load_day_layout(session, daily_train)
    orders = tuple(
        (
            await session.execute(
                select(Order.id).where(
                    Order.daily_train_id == daily_train.id,
                    Order.status == "CANCEL",
                    Order.released_at.is_(None),
                )
            )
        ).scalars()
    )
    tickets = (
        await session.execute(
            select(Ticket.id, Ticket.status).where(
                Ticket.daily_train_id == daily_train.id,
                Ticket.status.in_(RETURNED_TICKET_STATUSES),
                Ticket.released_at.is_(None),
            )
        )
    ).all()
    released = [order_release_id(o) for o in orders] + [ticket_release_id(t, st) for t, st in tickets]
    return DaySnapshot(replace(layout, released=tuple(released)), orders, tuple(t for t, _ in tickets))


async def _snapshots(
    container: SalesContext, date: dt.date | None, train_code: str | None
) -> list[DaySnapshot]:
    """Snapshots of the matching days, each consistent with itself (REPEATABLE READ on PostgreSQL: the
    layout and the list of unconfirmed releases come from one database snapshot)."""
    async with container.sessionmaker() as session, session.begin():
        if session.bind.dialect.name == "postgresql":
            await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        return [await _day_snapshot(session, d) for d in await _daily_trains(session, date, train_code)]


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
    now = utcnow()
    async with container.sessionmaker() as session, session.begin():
        if snapshot.cancelled_orders:
            await session.execute(
                update(Order)
                .where(Order.id.in_(snapshot.cancelled_orders), Order.released_at.is_(None))
                .values(released_at=now)
            )
        if snapshot.returned_tickets:
            await session.execute(
                update(Ticket)
                .where(Ticket.id.in_(snapshot.returned_tickets), Ticket.released_at.is_(None))
                .values(released_at=now)
            )
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


async def load_open_days(container: SalesContext) -> int:
    """Make sure every open train-day from today on is in the allocator; returns how many were loaded."""
    async with container.sessionmaker() as session, session.begin():
        days = [
            (d.train_code, d.service_date)
            for d in await _daily_trains(session, None, None, from_date=today())
        ]
    loaded = 0
    for code, date in days:
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


async def check_inventory(
    container: SalesContext, date: dt.date | None = None, train_code: str | None = None
) -> list[str]:
    """Differences between the allocator and the system of record (empty when they agree)."""
    async with container.sessionmaker() as session, session.begin():
        layouts = [
            await load_day_layout(session, d)
            for d in await _daily_trains(session, date, train_code, from_date=None if date else today())
        ]
    drift: list[str] = []
    for layout in layouts:
        label = f"{layout.train_code} {layout.date.isoformat()}"
        if not await container.allocator.is_loaded(layout.train_code, layout.date):
            drift.append(f"{label}: not loaded in the allocator")
            continue
        actual = await container.allocator.masks(layout.train_code, layout.date)
        drift.extend(f"{label} {line}" for line in diff_masks(layout.masks, actual))
    return drift


async def day_inventory(session: AsyncSession, train_code: str, date: dt.date) -> dict[str, Any]:
    """A train-day's inventory from the system of record, in the API.md shape."""
    async with session.begin():
        daily = await _daily_trains(session, date, train_code)
        if not daily:
            raise TrainDayNotFound(
                f"{train_code} is not open on {date.isoformat()}.",
                details={"train_code": train_code, "date": date.isoformat()},
            )
        layout = await load_day_layout(session, daily[0])
        stations = (
            (
                await session.execute(
                    select(DailyTrainStop.station_name)
                    .where(DailyTrainStop.daily_train_id == daily[0].id)
                    .order_by(DailyTrainStop.stop_index)
                )
            )
            .scalars()
            .all()
        )
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
        "stations": list(stations),
        "classes": classes,
    }


@dataclass
class Reconciliation:
    """What one reconciliation of a train-day found and did."""

    train_code: str
    date: dt.date
    loaded: bool = True
    repaired_seats: int = 0  # seats whose segments held in the database were marked held
    freed_seats: int = 0  # seats whose segments held in the allocator only were freed (drained day)
    unconfirmed: list[str] = field(default_factory=list)  # held in the allocator only: left alone


@runtime_checkable
class DrainAwareAllocator(Protocol):
    """An allocator that can tell a drained train-day and free drift on it (the Redis allocator)."""

    async def drained_mark(self, train_code: str, date: dt.date) -> str | None: ...

    async def unhold(
        self,
        train_code: str,
        date: dt.date,
        frees: Sequence[tuple[str, int, int]],
        *,
        expected_epoch: str,
        drained_mark: str,
    ) -> int: ...


async def _unconfirmed_releases(session: AsyncSession, daily_train_id: int) -> int:
    """Cancels and returned tickets of the day whose seat release is not confirmed yet."""
    orders = (
        await session.execute(
            select(Order.id)
            .where(
                Order.daily_train_id == daily_train_id,
                Order.status == "CANCEL",
                Order.released_at.is_(None),
            )
            .limit(1)
        )
    ).first()
    tickets = (
        await session.execute(
            select(Ticket.id)
            .where(
                Ticket.daily_train_id == daily_train_id,
                Ticket.status.in_(RETURNED_TICKET_STATUSES),
                Ticket.released_at.is_(None),
            )
            .limit(1)
        )
    ).first()
    return int(orders is not None) + int(tickets is not None)


async def reconcile_day(container: SalesContext, train_code: str, date: dt.date) -> Reconciliation:
    """Mark held in the allocator every segment an active ticket holds in the system of record and
    the allocator shows free (the drift a rebuild racing a commit leaves); free what the allocator
    holds and no active ticket does only where that is provably safe (a drained day, see below).

    Invariant (holding): the allocator never shows free a segment an active ticket holds, so no later
    order is sold a seat the database already gave away. The allocator is read before the database: a
    seat a cancel or refund gives back is freed in the database first and in the allocator after, so a
    ticket still active in the later read was not being given back when the allocator was read, and
    its free bits there are drift. The hold is applied only if the day is still the copy that was read
    (same load epoch; otherwise it is read again) and skips a ticket whose release was applied there
    since.

    Invariant (freeing): a segment held in the allocator but by no active ticket is freed only when
    nothing can still be on its way to the database for it, that is when all of these hold:
    (1) before the allocator and the database are read, the train-day's order stream exists and its
    committer group has no pending and no undelivered entry (every allocation appends its entry in the
    same atomic call, and an entry is acknowledged only after its order is final in the database and a
    failed order's seats were given back), so every allocation the masks show is final in the database
    when it is read; (2) no cancel or returned ticket of the day has an unconfirmed release (that
    release would be applied later and free the same bits again, perhaps under a newer order); (3) at
    the moment of freeing (one atomic call) the day is still the copy that was read (same load epoch)
    and the stream is unchanged and still drained (same last-generated-id: no order allocated since).
    Otherwise (an order accepted but not committed yet, a release on its way, an allocator without a
    stream) such segments are reported in ``unconfirmed`` and left alone: freeing them could sell a
    seat twice.
    """
    result = Reconciliation(train_code, date)
    allocator = container.allocator
    drainer = allocator if isinstance(allocator, DrainAwareAllocator) else None
    for _ in range(3):
        epoch = (await allocator.epochs([(train_code, date)]))[0]
        if epoch is None:
            result.loaded = False
            return result
        mark = await drainer.drained_mark(train_code, date) if drainer is not None else None
        actual = await allocator.masks(train_code, date)
        async with container.sessionmaker() as session:
            daily = await _daily_trains(session, date, train_code)
            if not daily:
                return result
            rows = (
                await session.execute(
                    select(
                        Ticket.id,
                        Ticket.order_id,
                        Ticket.seat_class,
                        Ticket.seat_index,
                        Ticket.from_index,
                        Ticket.to_index,
                    ).where(Ticket.daily_train_id == daily[0].id, Ticket.status.in_(ACTIVE_TICKET_STATUSES))
                )
            ).all()
            # Read after the tickets: a release confirmed in between was applied, one still pending shows.
            pending_releases = await _unconfirmed_releases(session, daily[0].id) if mark is not None else 0
        holds: list[SeatHold] = []
        expected: dict[str, dict[int, int]] = defaultdict(dict)
        for ticket, order, seat_class, index, a, b in rows:
            journey = journey_mask(a, b)
            by_seat = expected[seat_class]
            by_seat[index] = by_seat.get(index, 0) | journey
            have = actual.get(seat_class, [])
            if index < len(have) and journey & ~have[index]:
                releases = (order_release_id(order), ticket_release_id(ticket, "REFUNDED"))
                holds.append(
                    SeatHold(seat_class, index, a, b, (*releases, ticket_release_id(ticket, "CHANGED")))
                )
        orphans = [
            (seat_class, i, m & ~expected.get(seat_class, {}).get(i, 0))
            for seat_class, masks in actual.items()
            for i, m in enumerate(masks)
            if m & ~expected.get(seat_class, {}).get(i, 0)
        ]
        result.unconfirmed = [
            f"{seat_class} seat {i}: segments {bin(extra)} held in the allocator only"
            for seat_class, i, extra in orphans
        ]
        if holds:
            changed = await allocator.hold(train_code, date, holds, expected_epoch=epoch)
            if not changed and (await allocator.epochs([(train_code, date)]))[0] != epoch:
                continue  # loaded again meanwhile: compare with the new copy
            result.repaired_seats = changed
            if changed:
                log.warning(
                    "train_day_reconciled", train_code=train_code, date=date.isoformat(), seats=changed
                )
        if orphans and drainer is not None and mark is not None and not pending_releases:
            freed = await drainer.unhold(train_code, date, orphans, expected_epoch=epoch, drained_mark=mark)
            if freed:
                result.freed_seats = freed
                result.unconfirmed = []
                log.warning(
                    "train_day_drift_freed", train_code=train_code, date=date.isoformat(), seats=freed
                )
        return result
    return result


async def open_days(container: SalesContext) -> list[tuple[str, dt.date]]:
    """Every open train-day from today on, as ``(train_code, date)``."""
    async with container.sessionmaker() as session, session.begin():
        return [
            (d.train_code, d.service_date)
            for d in await _daily_trains(session, None, None, from_date=today())
        ]


async def reconcile_inventory(
    container: SalesContext, date: dt.date | None = None, train_code: str | None = None
) -> list[Reconciliation]:
    """``reconcile_day`` over the days ``check_inventory`` compares (a day, a train, or all from today)."""
    async with container.sessionmaker() as session, session.begin():
        days = [
            (d.train_code, d.service_date)
            for d in await _daily_trains(session, date, train_code, from_date=None if date else today())
        ]
    return [await reconcile_day(container, code, day) for code, day in days]
