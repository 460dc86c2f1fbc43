"""Refunded tickets: the refund transaction, and the confirmation that refunded or changed tickets'
seats went back to the allocator (``ticket.released_at``)."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from railbook.adapters.db.models import DailyTrainStop, Order, Payment, Ticket
from railbook.adapters.db.payments import SessionTx, order_record, ticket_record
from railbook.domain.order_state import TicketStatus
from railbook.services.after_sale.ports import Charge, OrderRecord, StopTime, TicketRecord, TicketSeat

RETURNED_STATUSES = [TicketStatus.REFUNDED.value, TicketStatus.CHANGED.value]


async def member_ticket(session: AsyncSession, member_id: int, ticket_id: str) -> TicketRecord | None:
    """The member's ticket (not locked); None when it is someone else's or unknown."""
    ticket = (
        await session.execute(select(Ticket).where(Ticket.id == ticket_id, Ticket.member_id == member_id))
    ).scalar_one_or_none()
    return None if ticket is None else ticket_record(ticket)


async def stop_time(session: AsyncSession, daily_train_id: int, stop_index: int) -> StopTime | None:
    """When the train-day leaves this stop; None when the stop is unknown or the last one."""
    row = (
        await session.execute(
            select(DailyTrainStop.departs, DailyTrainStop.day).where(
                DailyTrainStop.daily_train_id == daily_train_id,
                DailyTrainStop.stop_index == stop_index,
            )
        )
    ).first()
    if row is None or row[0] is None:
        return None
    return StopTime(row[0], int(row[1] or 0))


class RefundTx(SessionTx):
    """The statements of one refund transaction."""

    async def member_ticket(self, member_id: int, ticket_id: str) -> TicketRecord | None:
        """The member's ticket, read before any lock is taken."""
        return await member_ticket(self.session, member_id, ticket_id)

    async def lock_order(self, order_id: str) -> OrderRecord | None:
        """The order, locked until the commit."""
        order = await self.lock_order_row(order_id)
        return None if order is None else order_record(order)

    async def refunded_amount(self, order_id: str, provider_ref: str) -> int | None:
        """What an earlier refund under this reference paid back, if there was one."""
        return (
            await self.session.execute(
                select(Payment.amount_fen).where(
                    Payment.order_id == order_id,
                    Payment.kind == "refund",
                    Payment.provider_ref == provider_ref,
                )
            )
        ).scalar_one_or_none()

    async def stop_time(self, daily_train_id: int, stop_index: int) -> StopTime | None:
        """When the train-day leaves this stop."""
        return await stop_time(self.session, daily_train_id, stop_index)

    async def mark_refunded(self, ticket_id: str, refund: Charge, *, fee_fen: int, now: dt.datetime) -> None:
        """A locked ticket refunded (its seat not yet back) and the refund's payment row."""
        ticket = self.tickets[ticket_id]
        ticket.status = TicketStatus.REFUNDED.value
        ticket.updated_at = now
        ticket.released_at = None
        self.add_payment(ticket.order_id, refund, kind="refund", now=now, fee_fen=fee_fen)
        await self.session.flush()

    async def paid_ticket_count(self, order_id: str) -> int:
        """How many of the order's tickets are still paid."""
        stmt = (
            select(func.count())
            .select_from(Ticket)
            .where(Ticket.order_id == order_id, Ticket.status == TicketStatus.PAID.value)
        )
        if order_id in self.orders:  # locked here: its date names the one partition to read
            stmt = stmt.where(Ticket.service_date == self.orders[order_id].service_date)
        return (await self.session.execute(stmt)).scalar_one()


class SqlRefundStore:
    """Refunded tickets in the system of record."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[RefundTx]:
        """One refund transaction: commits when the block ends, rolls back on an exception."""
        async with self._sessionmaker() as session, session.begin():
            yield RefundTx(session)

    async def seats_to_return(self, ticket_ids: Sequence[str]) -> list[TicketSeat]:
        """The seats and journeys of those of these tickets that are refunded or changed."""
        async with self._sessionmaker() as session:
            rows = (
                await session.execute(
                    select(Ticket, Order.train_code, Order.service_date)
                    .join(Order, Order.id == Ticket.order_id)
                    .where(Ticket.id.in_(ticket_ids), Ticket.status.in_(RETURNED_STATUSES))
                )
            ).all()
        return [
            TicketSeat(
                ticket_id=t.id,
                status=t.status,
                train_code=train_code,
                service_date=service_date,
                from_index=t.from_index,
                to_index=t.to_index,
                seat_class=t.seat_class,
                seat_index=t.seat_index,
            )
            for t, train_code, service_date in rows
        ]

    async def stamp_tickets_returned(self, ticket_ids: Sequence[str], at: dt.datetime) -> None:
        """Record that these tickets' seats are back in the allocator."""
        async with self._sessionmaker() as session, session.begin():
            await session.execute(update(Ticket).where(Ticket.id.in_(ticket_ids)).values(released_at=at))

    async def unreturned_tickets(self, before: dt.datetime, limit: int) -> list[str]:
        """Refunded or changed tickets last changed before ``before`` whose seats are not confirmed
        back, oldest first."""
        async with self._sessionmaker() as session:
            return list(
                (
                    await session.execute(
                        select(Ticket.id)
                        .where(
                            Ticket.status.in_(RETURNED_STATUSES),
                            Ticket.released_at.is_(None),
                            Ticket.updated_at <= before,
                        )
                        .order_by(Ticket.updated_at)
                        .limit(limit)
                    )
                ).scalars()
            )
