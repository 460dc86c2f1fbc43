"""The order aggregate for the committer and the duplicate markers: transactions over order batches
(``order_batch``), order states, and the tickets that hold seats or markers."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from sqlalchemy import and_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased

from railbook.adapters.db.by_day import rows_by_order_id
from railbook.adapters.db.models import DailyTrainStop, Order, Passenger, Ticket
from railbook.adapters.db.order_batch import FAILED, SeatIds, insert_for, order_row, record_key, write_batch
from railbook.domain.fees import departure_at
from railbook.domain.order_state import TicketStatus
from railbook.domain.sale import Trip, train_day_name
from railbook.services.booking.ports import OrderMessage, SeatConflict
from railbook.services.booking.trip_ports import RecordedTrip


class _OrderTransaction:
    """``OrderWrites`` on one session inside its transaction."""

    def __init__(self, session: AsyncSession, seat_ids: SeatIds) -> None:
        self.session = session
        self.seat_ids = seat_ids

    async def insert_committed(self, messages: Sequence[OrderMessage], pay_deadline_seconds: int) -> set[str]:
        return await write_batch(self.session, self.seat_ids, messages, pay_deadline_seconds)

    async def insert_failed(
        self, messages: Sequence[OrderMessage], code: str, message: str, *, returning: bool = False
    ) -> set[str]:
        rows = [order_row(m, FAILED, 0, error=code, error_message=message) for m in messages]
        stmt = insert_for(self.session, Order.__table__).on_conflict_do_nothing(
            index_elements=record_key(self.session)
        )
        if not returning:
            await self.session.execute(stmt, rows)
            return set()
        return {row[0] for row in await self.session.execute(stmt.returning(Order.__table__.c.id), rows)}

    async def states(self, order_ids: Sequence[str]) -> dict[str, str]:
        found = await self.session.execute(
            select(Order.id, Order.status).where(Order.id.in_(list(order_ids)))
        )
        return {order_id: state for order_id, state in found.all()}


_order = Order.__table__.c
_ticket = Ticket.__table__.c
_HELD = (TicketStatus.UNPAID.value, TicketStatus.PAID.value)


class DbOrderStore:
    """The ``OrderStore`` of the system of record; keeps the daily seat ids it has read."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], engine: AsyncEngine) -> None:
        self.sessionmaker = sessionmaker
        self.engine = engine  # single-row reads on a connection: Core, no session or ORM state
        self.seat_ids = SeatIds()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_OrderTransaction]:
        """One transaction; a violated ticket constraint is raised as SeatConflict (rolled back)."""
        try:
            async with self.sessionmaker() as session, session.begin():
                yield _OrderTransaction(session, self.seat_ids)
        except IntegrityError as exc:
            raise SeatConflict(str(exc)) from exc

    async def states(self, order_ids: Sequence[str]) -> dict[str, str]:
        async with self.sessionmaker() as session:
            return await _OrderTransaction(session, self.seat_ids).states(order_ids)

    async def held_segments(self, msg: OrderMessage) -> list[tuple[str, int, int, int]]:
        wanted = {int(s["seat_index"]) for s in msg.seats}
        async with self.sessionmaker() as session:
            rows = (
                await session.execute(
                    select(Ticket.seat_class, Ticket.seat_index, Ticket.from_index, Ticket.to_index).where(
                        Ticket.daily_train_id == msg.daily_train_id,
                        Ticket.service_date == msg.date,
                        Ticket.status.in_([TicketStatus.UNPAID.value, TicketStatus.PAID.value]),
                        Ticket.seat_index.in_(sorted(wanted)),
                        Ticket.from_index < msg.to_index,
                        Ticket.to_index > msg.from_index,
                        Ticket.order_id != msg.order_id,
                    )
                )
            ).all()
        return [(str(c), int(i), int(a), int(b)) for c, i, a, b in rows]

    async def unpaid_holds(self, daily_train_id: int) -> list[tuple[str, int, int]]:
        async with self.sessionmaker() as session:
            rows = (
                await session.execute(
                    select(Ticket.order_id, Ticket.member_id, Ticket.passenger_id).where(
                        Ticket.daily_train_id == daily_train_id, Ticket.status == TicketStatus.UNPAID.value
                    )
                )
            ).all()
        return [(str(o), int(m), int(p)) for o, m, p in rows]

    async def still_unpaid(self, order_ids: Sequence[str]) -> set[str]:
        still: set[str] = set()
        unpaid = Ticket.status == TicketStatus.UNPAID.value
        async with self.sessionmaker() as session:
            for start in range(0, len(order_ids), 1000):
                chunk = list(order_ids[start : start + 1000])
                still.update(
                    (
                        await session.execute(
                            select(Ticket.order_id).where(Ticket.order_id.in_(chunk), unpaid).distinct()
                        )
                    ).scalars()
                )
        return still

    async def order_holds(self, order_ids: Sequence[str]) -> list[tuple[str, str, dt.date, int, int]]:
        async with self.sessionmaker() as session:
            rows = (
                await session.execute(
                    select(
                        Order.id, Order.train_code, Order.service_date, Order.member_id, Ticket.passenger_id
                    )
                    .join(Ticket, Ticket.order_id == Order.id)
                    .where(Order.id.in_(list(order_ids)))
                )
            ).all()
        return [(str(o), str(c), d, int(m), int(p)) for o, c, d, m, p in rows]

    async def passenger_cards(self, passenger_ids: Sequence[int]) -> dict[int, str]:
        stmt = select(Passenger.id, Passenger.id_card).where(Passenger.id.in_(list(passenger_ids)))
        async with self.engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return {int(pid): str(card) for pid, card in rows}

    async def trip_state(self, order_id: str, passenger_id: int) -> tuple[str, str | None] | None:
        """One Core statement: the order, and the passenger's unpaid or paid ticket in it joined in
        (an order and its tickets are committed together, so one snapshot sees both or neither)."""
        held = and_(
            _ticket.order_id == _order.id,
            _ticket.service_date == _order.service_date,
            _ticket.passenger_id == passenger_id,
            _ticket.status.in_(_HELD),
        )
        stmt = (
            select(_order.status, _ticket.status)
            .select_from(Order.__table__.outerjoin(Ticket.__table__, held))
            .where(_order.id == order_id)
            .limit(1)
        )
        async with self.engine.connect() as conn:
            rows = await rows_by_order_id(conn, stmt, _order.service_date, order_id)
        row = rows[0] if rows else None
        return None if row is None else (str(row[0]), None if row[1] is None else str(row[1]))

    async def held_trips(self, passenger_ids: Sequence[int] | None, since: dt.date) -> list[RecordedTrip]:
        held = Ticket.status.in_([TicketStatus.UNPAID.value, TicketStatus.PAID.value])
        which = [held, Order.service_date >= since]
        if passenger_ids is not None:
            which.append(Ticket.passenger_id.in_(list(passenger_ids)))
        board, alight = aliased(DailyTrainStop), aliased(DailyTrainStop)
        train, from_, to_ = Ticket.daily_train_id, Ticket.from_index, Ticket.to_index
        async with self.sessionmaker() as session:
            rows = (
                await session.execute(
                    select(
                        Ticket.passenger_id,
                        Passenger.id_card,
                        Ticket.order_id,
                        Ticket.member_id,
                        Order.train_code,
                        Order.service_date,
                        board.departs,
                        board.day,
                        alight.arrives,
                        alight.day,
                        Ticket.status,
                    )
                    .join(Order, Order.id == Ticket.order_id)
                    # The person, by ID number: the guard keeps trips per traveller key.
                    .join(Passenger, Passenger.id == Ticket.passenger_id)
                    .join(board, (board.daily_train_id == train) & (board.stop_index == from_))
                    .join(alight, (alight.daily_train_id == train) & (alight.stop_index == to_))
                    .where(*which)
                )
            ).all()
        trips: list[RecordedTrip] = []
        for pid, card, order_id, member_id, code, date, departs, d_day, arrives, a_day, status in rows:
            starts = int(departure_at(date, departs or "00:00", d_day or 0).timestamp())
            ends = int(departure_at(date, arrives, a_day or 0).timestamp()) if arrives else starts
            trip = Trip(train_day_name(code, date), starts, max(starts, ends))
            trips.append((int(pid), str(card), str(order_id), int(member_id), trip, str(status)))
        return trips
