"""The payments of orders, and the order-row operations the after-sale use cases share: locking an
order, marking it paid, cancelling it, writing an outbox event beside the change.

Locks: ``with_for_update`` is ``FOR UPDATE`` on PostgreSQL; SQLite ignores it, and there the
engine's ``BEGIN IMMEDIATE`` already serialises writers.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from railbook.adapters.db.models import Order, Outbox, Payment, Ticket
from railbook.domain.order_state import OrderStatus, PaymentStatus, TicketStatus
from railbook.services.after_sale.ports import (
    SUCCEEDED,
    Charge,
    OrderRecord,
    PaymentAlreadyRecorded,
    TicketRecord,
)


def order_record(order: Order) -> OrderRecord:
    """A snapshot of an order row."""
    return OrderRecord(
        id=order.id,
        member_id=order.member_id,
        train_code=order.train_code,
        service_date=order.service_date,
        from_index=order.from_index,
        to_index=order.to_index,
        from_station=order.from_station,
        to_station=order.to_station,
        status=order.status,
        payment_status=order.payment_status,
        total_fen=order.total_fen,
        pay_deadline=order.pay_deadline,
        released_at=order.released_at,
    )


def ticket_record(ticket: Ticket) -> TicketRecord:
    """A snapshot of a ticket row."""
    return TicketRecord(
        id=ticket.id,
        order_id=ticket.order_id,
        member_id=ticket.member_id,
        passenger_id=ticket.passenger_id,
        daily_train_id=ticket.daily_train_id,
        seat_class=ticket.seat_class,
        seat_index=ticket.seat_index,
        from_index=ticket.from_index,
        to_index=ticket.to_index,
        price_fen=ticket.price_fen,
        status=ticket.status,
    )


class OutboxTx:
    """A handle on one open transaction that can write outbox events beside its state change."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def add_event(self, topic: str, key: str, payload: dict[str, object], *, now: dt.datetime) -> None:
        """An outbox event committed with the state change."""
        self.session.add(Outbox(topic=topic, key=key, created_at=now, payload=payload))


class SessionTx(OutboxTx):
    """A transaction over orders and tickets; subclasses add their statements. Rows it locked are
    kept by id, so a later change to them is a plain attribute write flushed with the transaction."""

    def __init__(self, session: AsyncSession) -> None:
        super().__init__(session)
        self.orders: dict[str, Order] = {}
        self.tickets: dict[str, Ticket] = {}

    async def set_payment_status(self, order_id: str, payment_status: str, *, now: dt.datetime) -> None:
        """A locked order's payment status."""
        order = self.orders[order_id]
        order.payment_status = payment_status
        order.updated_at = now

    async def lock_order_row(self, order_id: str, member_id: int | None = None) -> Order | None:
        """The order row, locked for this transaction; someone else's order is None."""
        stmt = (
            select(Order)
            .where(Order.id == order_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        if member_id is not None:
            stmt = stmt.where(Order.member_id == member_id)
        order = (await self.session.execute(stmt)).scalar_one_or_none()
        if order is not None:
            self.orders[order.id] = order
        return order

    async def lock_ticket(self, ticket_id: str) -> TicketRecord:
        """The ticket row, locked for this transaction."""
        ticket = (
            await self.session.execute(
                select(Ticket)
                .where(Ticket.id == ticket_id)
                .with_for_update()
                .execution_options(populate_existing=True)
            )
        ).scalar_one()
        self.tickets[ticket.id] = ticket
        return ticket_record(ticket)

    async def cancel_order(self, order_id: str, *, now: dt.datetime) -> None:
        """Move a locked order to CANCEL and its unpaid tickets to CANCELLED (its seats not yet back)."""
        order = self.orders[order_id]
        order.status = OrderStatus.CANCEL.value
        order.updated_at = now
        order.released_at = None
        await self.session.execute(
            update(Ticket)
            .where(Ticket.order_id == order.id, Ticket.status == TicketStatus.UNPAID.value)
            .values(status=TicketStatus.CANCELLED.value, updated_at=now)
        )

    async def mark_tickets_paid(self, order: Order, now: dt.datetime) -> None:
        """A locked order paid: its unpaid tickets become paid."""
        order.payment_status = PaymentStatus.PAID.value
        order.updated_at = now
        await self.session.execute(
            update(Ticket)
            .where(Ticket.order_id == order.id, Ticket.status == TicketStatus.UNPAID.value)
            .values(status=TicketStatus.PAID.value, updated_at=now)
        )

    def add_payment(
        self,
        order_id: str,
        charge: Charge,
        *,
        kind: str,
        now: dt.datetime,
        idempotency_key: str | None = None,
        fee_fen: int | None = None,
    ) -> None:
        """A succeeded payment row (a charge, or a refund with the fee kept) written with the
        transaction."""
        self.session.add(
            Payment(
                order_id=order_id,
                provider=charge.provider,
                provider_ref=charge.provider_ref,
                kind=kind,
                amount_fen=charge.amount_fen,
                fee_fen=fee_fen,
                status=SUCCEEDED,
                idempotency_key=idempotency_key,
                created_at=now,
            )
        )


class PaymentTx(SessionTx):
    """The statements of one payment transaction."""

    async def order_paid_with_key(self, member_id: int, idempotency_key: str) -> str | None:
        """The order this member paid under this Idempotency-Key, if any."""
        return (
            (
                await self.session.execute(
                    select(Payment.order_id)
                    .join(Order, Order.id == Payment.order_id)
                    .where(
                        Order.member_id == member_id,
                        Payment.idempotency_key == idempotency_key,
                        Payment.kind == "pay",
                    )
                )
            )
            .scalars()
            .first()
        )

    async def order_of_provider_ref(self, provider: str, provider_ref: str) -> str | None:
        """The order a provider reference was applied to, if it was."""
        return (
            await self.session.execute(
                select(Payment.order_id).where(
                    Payment.provider == provider, Payment.provider_ref == provider_ref
                )
            )
        ).scalar_one_or_none()

    async def lock_order(self, order_id: str, member_id: int | None = None) -> OrderRecord | None:
        """The order, locked until the commit; None when it is not this member's."""
        order = await self.lock_order_row(order_id, member_id)
        return None if order is None else order_record(order)

    async def mark_paid(
        self, order_id: str, charge: Charge, *, idempotency_key: str | None, now: dt.datetime
    ) -> None:
        """Record the payment of a locked order: payment row, order and tickets paid, ``order.paid``."""
        order = self.orders[order_id]
        self.add_payment(order.id, charge, kind="pay", now=now, idempotency_key=idempotency_key)
        await self.mark_tickets_paid(order, now)
        self.add_event(
            "order.paid",
            order.id,
            {
                "order_id": order.id,
                "member_id": order.member_id,
                "amount_fen": charge.amount_fen,
                "provider_ref": charge.provider_ref,
            },
            now=now,
        )


class SqlPaymentStore:
    """Payments in the system of record."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[PaymentTx]:
        """One payment transaction; losing the unique (provider, provider_ref) raises
        ``PaymentAlreadyRecorded``."""
        try:
            async with self._sessionmaker() as session, session.begin():
                yield PaymentTx(session)
        except IntegrityError as exc:
            raise PaymentAlreadyRecorded(str(exc)[:200]) from exc
