"""Open train-days in the system of record: the allocator's view of a day (seats and the masks its
active tickets hold), the releases not confirmed yet, and what reconciliation compares.

A seat's state is derived from the active tickets (UNPAID or PAID) that name it.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from railbook.adapters.db.models import DailySeat, DailyTrain, DailyTrainStop, Order, Ticket
from railbook.domain.seating import Seat, journey_mask
from railbook.services.ports import DayLayout
from railbook.services.sales.ports import ActiveTicket, DayHolders, DayRecord, TrainDay

ACTIVE_TICKET_STATUSES = ("UNPAID", "PAID")
RETURNED_TICKET_STATUSES = ("REFUNDED", "CHANGED")


async def active_masks(session: AsyncSession, daily_train: DailyTrain) -> dict[str, dict[int, int]]:
    """Sold-segment masks derived from active tickets: class → seat index → mask."""
    rows = await session.execute(
        select(Ticket.seat_class, Ticket.seat_index, Ticket.from_index, Ticket.to_index).where(
            Ticket.daily_train_id == daily_train.id,
            Ticket.service_date == daily_train.service_date,
            Ticket.status.in_(ACTIVE_TICKET_STATUSES),
        )
    )
    masks: dict[str, dict[int, int]] = defaultdict(dict)
    for r in rows.all():
        by_seat = masks[r.seat_class]
        by_seat[r.seat_index] = by_seat.get(r.seat_index, 0) | journey_mask(r.from_index, r.to_index)
    return masks


async def _layout(session: AsyncSession, daily_train: DailyTrain) -> DayLayout:
    """The allocator's view of a train-day, rebuilt from the system of record."""
    rows = await session.execute(
        select(
            DailySeat.seat_class,
            DailySeat.seat_index,
            DailySeat.carriage,
            DailySeat.seat_row,
            DailySeat.letter,
        )
        .where(DailySeat.daily_train_id == daily_train.id, DailySeat.service_date == daily_train.service_date)
        .order_by(DailySeat.seat_class, DailySeat.seat_index)
    )
    seats: dict[str, list[Seat]] = defaultdict(list)
    for r in rows.all():
        seats[r.seat_class].append(Seat(r.seat_index, r.carriage, r.seat_row, r.letter))
    sold = await active_masks(session, daily_train)
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


async def _record(session: AsyncSession, daily_train: DailyTrain) -> DayRecord:
    """The layout and the unconfirmed releases of one day, read in the caller's (one) snapshot."""
    layout = await _layout(session, daily_train)
    orders = tuple(
        (
            await session.execute(
                select(Order.id).where(
                    Order.daily_train_id == daily_train.id,
                    Order.service_date == daily_train.service_date,
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
                Ticket.service_date == daily_train.service_date,
                Ticket.status.in_(RETURNED_TICKET_STATUSES),
                Ticket.released_at.is_(None),
            )
        )
    ).all()
    return DayRecord(layout, orders, tuple((t, st) for t, st in tickets))


async def _unconfirmed_releases(session: AsyncSession, daily_train: DailyTrain) -> int:
    """Cancels and returned tickets of the day whose seat release is not confirmed yet."""
    orders = (
        await session.execute(
            select(Order.id)
            .where(
                Order.daily_train_id == daily_train.id,
                Order.service_date == daily_train.service_date,
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
                Ticket.daily_train_id == daily_train.id,
                Ticket.service_date == daily_train.service_date,
                Ticket.status.in_(RETURNED_TICKET_STATUSES),
                Ticket.released_at.is_(None),
            )
            .limit(1)
        )
    ).first()
    return int(orders is not None) + int(tickets is not None)


class SqlDayRecords:
    """Reads (and release stamps) of open train-days on PostgreSQL or SQLite."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker

    async def open_days(
        self, date: dt.date | None, train_code: str | None, *, from_date: dt.date | None = None
    ) -> list[TrainDay]:
        """The matching open train-days, by date then code."""
        async with self._sessionmaker() as session, session.begin():
            return [
                TrainDay(d.id, d.train_code, d.service_date, d.n_stops)
                for d in await _daily_trains(session, date, train_code, from_date=from_date)
            ]

    async def layouts(
        self, date: dt.date | None, train_code: str | None, *, from_date: dt.date | None = None
    ) -> list[DayLayout]:
        """The allocator's view of the matching days, in one transaction."""
        async with self._sessionmaker() as session, session.begin():
            return [
                await _layout(session, d)
                for d in await _daily_trains(session, date, train_code, from_date=from_date)
            ]

    async def snapshots(self, date: dt.date | None, train_code: str | None) -> list[DayRecord]:
        """Records of the matching days, each consistent with itself (REPEATABLE READ on PostgreSQL:
        the layout and the list of unconfirmed releases come from one database snapshot)."""
        async with self._sessionmaker() as session, session.begin():
            if session.bind.dialect.name == "postgresql":
                await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            return [await _record(session, d) for d in await _daily_trains(session, date, train_code)]

    async def confirm_releases(
        self, orders: Sequence[str], tickets: Sequence[str], released_at: dt.datetime
    ) -> None:
        """Stamp ``released_at`` on those cancelled orders and returned tickets still unstamped."""
        async with self._sessionmaker() as session, session.begin():
            if orders:
                await session.execute(
                    update(Order)
                    .where(Order.id.in_(orders), Order.released_at.is_(None))
                    .values(released_at=released_at)
                )
            if tickets:
                await session.execute(
                    update(Ticket)
                    .where(Ticket.id.in_(tickets), Ticket.released_at.is_(None))
                    .values(released_at=released_at)
                )

    async def inventory(self, train_code: str, date: dt.date) -> tuple[DayLayout, list[str]] | None:
        """A day's layout and its station names in stop order; None if it is not open."""
        async with self._sessionmaker() as session, session.begin():
            daily = await _daily_trains(session, date, train_code)
            if not daily:
                return None
            layout = await _layout(session, daily[0])
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
        return layout, list(stations)

    async def holders(self, train_code: str, date: dt.date, *, with_releases: bool) -> DayHolders | None:
        """The day's active tickets and, when asked, pending releases (read after the tickets: a
        release confirmed in between was applied, one still pending shows); None if not open."""
        async with self._sessionmaker() as session:
            daily = await _daily_trains(session, date, train_code)
            if not daily:
                return None
            rows = (
                await session.execute(
                    select(
                        Ticket.id,
                        Ticket.order_id,
                        Ticket.seat_class,
                        Ticket.seat_index,
                        Ticket.from_index,
                        Ticket.to_index,
                    ).where(
                        Ticket.daily_train_id == daily[0].id,
                        Ticket.service_date == date,
                        Ticket.status.in_(ACTIVE_TICKET_STATUSES),
                    )
                )
            ).all()
            pending = await _unconfirmed_releases(session, daily[0]) if with_releases else 0
        return DayHolders(tuple(ActiveTicket(*row) for row in rows), pending)
