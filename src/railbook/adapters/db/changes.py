"""Ticket changes: the checks of a change request, the pending list, and each change's settlement."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from railbook.adapters.db.by_day import rows_by_order_id
from railbook.adapters.db.models import Order, Ticket, TicketChange
from railbook.adapters.db.order_batch import insert_for
from railbook.adapters.db.payments import SessionTx, order_record
from railbook.adapters.db.refunds import member_ticket, stop_time
from railbook.domain.order_state import ChangeStatus, TicketStatus
from railbook.services.after_sale.ports import ChangeRecord, OrderRecord, StopTime, TicketRecord

PENDING = ChangeStatus.PENDING.value
DONE = ChangeStatus.DONE.value
HELD = [TicketStatus.UNPAID.value, TicketStatus.PAID.value]


class ChangeReader:
    """The reads that check a change request, in one session that writes nothing."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def member_ticket(self, member_id: int, ticket_id: str) -> TicketRecord | None:
        """The member's ticket; None when it is someone else's or unknown."""
        return await member_ticket(self.session, member_id, ticket_id)

    async def order(self, order_id: str) -> OrderRecord:
        """The ticket's order."""
        rows = await rows_by_order_id(
            self.session, select(Order).where(Order.id == order_id), Order.service_date, order_id
        )
        return order_record(rows[0][0])

    async def stop_time(self, daily_train_id: int, stop_index: int) -> StopTime | None:
        """When the train-day leaves this stop."""
        return await stop_time(self.session, daily_train_id, stop_index)

    async def change_in_progress(self, ticket_id: str) -> bool:
        """Whether a change of this ticket is pending."""
        busy = (
            await self.session.execute(
                select(TicketChange.id).where(
                    TicketChange.ticket_id == ticket_id, TicketChange.status == PENDING
                )
            )
        ).first()
        return busy is not None

    async def came_from_change(self, order_id: str) -> bool:
        """Whether this order was placed by a change that was carried out."""
        done = (
            await self.session.execute(
                select(TicketChange.id).where(
                    TicketChange.new_order_id == order_id, TicketChange.status == DONE
                )
            )
        ).first()
        return done is not None


class ChangeTx(SessionTx):
    """The statements of one change's settlement."""

    def __init__(self, session: AsyncSession) -> None:
        super().__init__(session)
        self.changes: dict[int, TicketChange] = {}

    async def lock_pending_change(self, change_id: int, *, wait: bool = False) -> ChangeRecord | None:
        """The change while still pending, locked; None when it is settled, or (unless ``wait``) when
        another worker holds it (``SKIP LOCKED``), so two workers never settle one change twice."""
        change = (
            await self.session.execute(
                select(TicketChange)
                .where(TicketChange.id == change_id, TicketChange.status == PENDING)
                .with_for_update(skip_locked=not wait)
                .execution_options(populate_existing=True)
            )
        ).scalar_one_or_none()
        if change is None:
            return None
        self.changes[change.id] = change
        return ChangeRecord(
            id=change.id,
            ticket_id=change.ticket_id,
            member_id=change.member_id,
            new_order_id=change.new_order_id,
            status=change.status,
            created_at=change.created_at,
        )

    async def lock_new_order(self, order_id: str) -> OrderRecord | None:
        """The change's new order, locked; None while it has not reached the database."""
        stmt = select(Order).where(Order.id == order_id).with_for_update()
        rows = await rows_by_order_id(self.session, stmt, Order.service_date, order_id)
        new = rows[0][0] if rows else None
        if new is None:
            return None
        self.orders[new.id] = new
        return order_record(new)

    async def set_change_status(self, change_id: int, status: str, *, now: dt.datetime) -> None:
        """A locked change's outcome."""
        change = self.changes[change_id]
        change.status, change.updated_at = status, now

    async def order_of_ticket(self, ticket_id: str) -> str:
        """The order a ticket belongs to."""
        return (
            await self.session.execute(select(Ticket.order_id).where(Ticket.id == ticket_id))
        ).scalar_one()

    async def lock_order(self, order_id: str) -> OrderRecord | None:
        """The order, locked until the commit."""
        order = await self.lock_order_row(order_id)
        return None if order is None else order_record(order)

    async def fare_of(self, order_id: str) -> int:
        """The fares of the order's held tickets (what its seats cost, whoever paid them)."""
        stmt = select(func.coalesce(func.sum(Ticket.price_fen), 0)).where(
            Ticket.order_id == order_id, Ticket.status.in_(HELD)
        )
        if order_id in self.orders:  # locked here: its date names the one partition to read
            stmt = stmt.where(Ticket.service_date == self.orders[order_id].service_date)
        total = await self.session.scalar(stmt)
        return int(total or 0)

    async def stop_time(self, daily_train_id: int, stop_index: int) -> StopTime | None:
        """When the train-day leaves this stop."""
        return await stop_time(self.session, daily_train_id, stop_index)

    async def mark_changed(self, ticket_id: str, *, now: dt.datetime) -> None:
        """A locked ticket changed (its seat not yet back)."""
        old = self.tickets[ticket_id]
        old.status, old.updated_at, old.released_at = TicketStatus.CHANGED.value, now, None

    async def mark_paid(self, order_id: str, *, now: dt.datetime) -> None:
        """A locked order paid and its unpaid tickets with it."""
        await self.mark_tickets_paid(self.orders[order_id], now)


class SqlChangeStore:
    """Ticket changes in the system of record."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[ChangeReader]:
        """One session for the checks of a change request; nothing is committed."""
        async with self._sessionmaker() as session:
            yield ChangeReader(session)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[ChangeTx]:
        """One settlement: commits when the block ends, rolls back on an exception."""
        async with self._sessionmaker() as session, session.begin():
            yield ChangeTx(session)

    async def add_change(
        self, *, ticket_id: str, member_id: int, new_order_id: str, now: dt.datetime
    ) -> None:
        """A pending change of a ticket to a new order; nothing when that new order has one already
        (the request and the committer of the new order both write it, whichever comes first)."""
        async with self._sessionmaker() as session, session.begin():
            stmt = insert_for(session, TicketChange.__table__).on_conflict_do_nothing(
                index_elements=["new_order_id"]
            )
            await session.execute(
                stmt,
                [
                    {
                        "ticket_id": ticket_id,
                        "member_id": member_id,
                        "new_order_id": new_order_id,
                        "status": PENDING,
                        "created_at": now,
                        "updated_at": now,
                    }
                ],
            )

    async def pending_change_of_order(self, order_id: str, member_id: int | None = None) -> int | None:
        """The pending change that placed this order (of this member), if there is one."""
        stmt = select(TicketChange.id).where(
            TicketChange.new_order_id == order_id, TicketChange.status == PENDING
        )
        if member_id is not None:
            stmt = stmt.where(TicketChange.member_id == member_id)
        async with self._sessionmaker() as session:
            found: int | None = await session.scalar(stmt)
        return found

    async def pending_changes(self, limit: int) -> list[int]:
        """The ids of pending changes, oldest first."""
        async with self._sessionmaker() as session:
            return list(
                (
                    await session.execute(
                        select(TicketChange.id)
                        .where(TicketChange.status == PENDING)
                        .order_by(TicketChange.id)
                        .limit(limit)
                    )
                ).scalars()
            )

    async def new_order_of(self, change_id: int) -> str | None:
        """The new order a change placed."""
        async with self._sessionmaker() as session:
            new_order: str | None = await session.scalar(
                select(TicketChange.new_order_id).where(TicketChange.id == change_id)
            )
        return new_order
