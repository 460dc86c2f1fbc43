"""Cancelled orders: the cancelling transaction, the expiry batch, and the confirmation that their
seats went back to the allocator (``order.released_at``)."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from railbook.adapters.db.models import Order, Ticket
from railbook.adapters.db.payments import SessionTx, order_record, ticket_record
from railbook.domain.order_state import OrderStatus, PaymentStatus, TicketStatus
from railbook.services.after_sale.ports import OrderRecord, TicketRecord


class CancellationTx(SessionTx):
    """The statements of one cancelling transaction."""

    async def lock_order(self, order_id: str, member_id: int | None = None) -> OrderRecord | None:
        """The order, locked until the commit; None when it is not this member's."""
        order = await self.lock_order_row(order_id, member_id)
        return None if order is None else order_record(order)

    async def lock_due_orders(self, now: dt.datetime, limit: int) -> list[OrderRecord]:
        """Held unpaid orders whose pay deadline has passed, oldest deadline first, locked.

        ``SKIP LOCKED`` on PostgreSQL: several expiry processes each take a different batch, and a
        payment holding an order's row lock is never overtaken. SQLite ignores the clause; there the
        write transaction itself serialises the processes."""
        due = (
            (
                await self.session.execute(
                    select(Order)
                    .where(
                        Order.status == OrderStatus.SUCCESS.value,
                        Order.payment_status == PaymentStatus.UNPAID.value,
                        Order.pay_deadline.is_not(None),
                        Order.pay_deadline <= now,
                    )
                    .order_by(Order.pay_deadline)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                )
            )
            .scalars()
            .all()
        )
        for order in due:
            self.orders[order.id] = order
        return [order_record(o) for o in due]


class SqlCancellationStore:
    """Cancelled orders in the system of record."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[CancellationTx]:
        """One cancelling transaction: commits when the block ends, rolls back on an exception."""
        async with self._sessionmaker() as session, session.begin():
            yield CancellationTx(session)

    async def orders_with_cancelled_tickets(
        self, order_ids: Sequence[str]
    ) -> tuple[list[OrderRecord], list[TicketRecord]]:
        """These orders and their CANCELLED tickets (two reads, one session)."""
        async with self._sessionmaker() as session:
            orders = (await session.execute(select(Order).where(Order.id.in_(order_ids)))).scalars().all()
            tickets = (
                (
                    await session.execute(
                        select(Ticket).where(
                            Ticket.order_id.in_(order_ids), Ticket.status == TicketStatus.CANCELLED.value
                        )
                    )
                )
                .scalars()
                .all()
            )
        return [order_record(o) for o in orders], [ticket_record(t) for t in tickets]

    async def stamp_orders_returned(self, order_ids: Sequence[str], at: dt.datetime) -> None:
        """Record that these orders' seats are back in the allocator."""
        async with self._sessionmaker() as session, session.begin():
            await session.execute(update(Order).where(Order.id.in_(order_ids)).values(released_at=at))

    async def unreturned_orders(self, before: dt.datetime, limit: int) -> list[str]:
        """CANCEL orders last changed before ``before`` whose seats are not confirmed back, oldest first."""
        async with self._sessionmaker() as session:
            return list(
                (
                    await session.execute(
                        select(Order.id)
                        .where(
                            Order.status == OrderStatus.CANCEL.value,
                            Order.released_at.is_(None),
                            Order.updated_at <= before,
                        )
                        .order_by(Order.updated_at)
                        .limit(limit)
                    )
                ).scalars()
            )
