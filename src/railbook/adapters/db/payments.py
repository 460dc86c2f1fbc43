"""The payments of orders, and the order-row operations the after-sale use cases share: locking an
order, marking it paid, cancelling it, writing an outbox event beside the change.

Locks: ``with_for_update`` is ``FOR UPDATE`` on PostgreSQL; SQLite ignores it, and there the
engine's ``BEGIN IMMEDIATE`` already serialises writers.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import Row, Select, bindparam, insert, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from railbook.adapters.db.by_day import rows_by_order_id, rows_by_order_id_bound
from railbook.adapters.db.models import Order, Outbox, Payment, Ticket, TicketChange
from railbook.domain.order_state import ChangeStatus, OrderStatus, PaymentStatus, TicketStatus
from railbook.services.after_sale.ports import (
    SUCCEEDED,
    Charge,
    OrderRecord,
    PayableOrder,
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
        rows = await rows_by_order_id(self.session, stmt, Order.service_date, order_id)
        order = rows[0][0] if rows else None
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

    async def cancel_order(self, order_id: str, *, now: dt.datetime) -> list[TicketRecord]:
        """Move a locked order to CANCEL and its unpaid tickets to CANCELLED (its seats not yet back);
        returns those tickets."""
        order = self.orders[order_id]
        order.status = OrderStatus.CANCEL.value
        order.updated_at = now
        order.released_at = None
        cancelled = await self.session.execute(
            update(Ticket)
            .where(
                Ticket.order_id == order.id,
                Ticket.service_date == order.service_date,
                Ticket.status == TicketStatus.UNPAID.value,
            )
            .values(status=TicketStatus.CANCELLED.value, updated_at=now)
            .returning(*_TICKET_FIELDS)
        )
        return [TicketRecord(*row) for row in cancelled]

    async def mark_tickets_paid(self, order: Order, now: dt.datetime) -> None:
        """A locked order paid: its unpaid tickets become paid."""
        order.payment_status = PaymentStatus.PAID.value
        order.updated_at = now
        await self.session.execute(
            update(Ticket)
            .where(
                Ticket.order_id == order.id,
                Ticket.service_date == order.service_date,
                Ticket.status == TicketStatus.UNPAID.value,
            )
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


_order = Order.__table__.c
_ticket = Ticket.__table__.c
_payment = Payment.__table__.c
_change = TicketChange.__table__.c
_TICKET_FIELDS = (
    _ticket.id,
    _ticket.order_id,
    _ticket.member_id,
    _ticket.passenger_id,
    _ticket.daily_train_id,
    _ticket.seat_class,
    _ticket.seat_index,
    _ticket.from_index,
    _ticket.to_index,
    _ticket.price_fen,
    _ticket.status,
)
_ORDER_FIELDS = (
    _order.id,
    _order.member_id,
    _order.train_code,
    _order.service_date,
    _order.from_index,
    _order.to_index,
    _order.from_station,
    _order.to_station,
    _order.status,
    _order.payment_status,
    _order.total_fen,
    _order.pay_deadline,
    _order.released_at,
)
# The pending change that placed an order (a change's new order owes only the difference).
_PENDING_CHANGE = (
    select(_change.id)
    .where(_change.new_order_id == _order.id, _change.status == ChangeStatus.PENDING.value)
    .scalar_subquery()
    .label("change_id")
)


# The statements of the pay path, built once (a sale pays thousands of orders a minute: building a
# statement and its cache key per call cost more than running it). Parameters: order_id, member_id, key.
_PAID_WITH_KEY = (
    select(_payment.order_id)
    .join(Order.__table__, _order.id == _payment.order_id)
    .where(
        _order.member_id == bindparam("member_id"),
        _payment.idempotency_key == bindparam("key"),
        _payment.kind == "pay",
    )
    .limit(1)
)


# A lock by order id: the statement on the date's partition (``service_date`` bound), and on every one.
_Locking = tuple[Select[Any], Select[Any]]


def _lock_statement(*extra: Any, by_member: bool) -> _Locking:
    """The order row locked for the transaction (with ``extra`` columns), by id and maybe member."""
    stmt = select(*_ORDER_FIELDS, *extra).where(_order.id == bindparam("order_id"))
    if by_member:
        stmt = stmt.where(_order.member_id == bindparam("member_id"))
    dated = stmt.where(_order.service_date == bindparam("service_date"))
    return dated.with_for_update(of=Order.__table__), stmt.with_for_update(of=Order.__table__)


_LOCK = {by_member: _lock_statement(by_member=by_member) for by_member in (False, True)}
_LOCK_TO_PAY = _lock_statement(_PENDING_CHANGE, by_member=True)
_LOCK_TO_PAY_KEYED = _lock_statement(
    _PENDING_CHANGE, _PAID_WITH_KEY.scalar_subquery().label("key_order"), by_member=True
)


class PaymentTx:
    """The statements of one payment transaction: Core statements on one connection, no ORM object
    (a payment is one of the commonest writes of a sale). The order row read by ``lock_order`` or
    ``lock_to_pay`` stays locked until the commit."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self._locked: dict[str, OrderRecord] = {}

    async def order_paid_with_key(self, member_id: int, idempotency_key: str) -> str | None:
        """The order this member paid under this Idempotency-Key, if any."""
        found: str | None = await self.conn.scalar(
            _PAID_WITH_KEY, {"member_id": member_id, "key": idempotency_key}
        )
        return found

    async def order_of_provider_ref(self, provider: str, provider_ref: str) -> str | None:
        """The order a provider reference was applied to, if it was."""
        found: str | None = await self.conn.scalar(
            select(_payment.order_id).where(
                _payment.provider == provider, _payment.provider_ref == provider_ref
            )
        )
        return found

    async def _lock(
        self, stmts: _Locking, order_id: str, member_id: int | None, **params: Any
    ) -> Row[Any] | None:
        bound = {"order_id": order_id, "member_id": member_id, **params}
        rows = await rows_by_order_id_bound(self.conn, stmts, bound, order_id)
        row = rows[0] if rows else None
        if row is not None:
            self._locked[order_id] = OrderRecord(*row[: len(_ORDER_FIELDS)])
        return row

    async def lock_order(self, order_id: str, member_id: int | None = None) -> OrderRecord | None:
        """The order, locked until the commit; None when it is not this member's."""
        found = await self._lock(_LOCK[member_id is not None], order_id, member_id)
        return None if found is None else self._locked[order_id]

    async def lock_to_pay(
        self, order_id: str, member_id: int, idempotency_key: str | None
    ) -> PayableOrder | None:
        """The member's order locked, with the pending change that placed it and the order already
        paid under ``idempotency_key``, in one statement; None when it is not this member's."""
        if idempotency_key:
            row = await self._lock(_LOCK_TO_PAY_KEYED, order_id, member_id, key=idempotency_key)
        else:
            row = await self._lock(_LOCK_TO_PAY, order_id, member_id)
        if row is None:
            return None
        return PayableOrder(
            self._locked[order_id],
            change_id=row.change_id,
            paid_with_key=row.key_order if idempotency_key else None,
        )

    async def mark_paid(
        self, order_id: str, charge: Charge, *, idempotency_key: str | None, now: dt.datetime
    ) -> list[int]:
        """Record the payment of a locked order: payment row, order and tickets paid, ``order.paid``;
        returns the passengers of the tickets paid."""
        order = self._locked[order_id]
        event = {
            "order_id": order_id,
            "member_id": order.member_id,
            "amount_fen": charge.amount_fen,
            "provider_ref": charge.provider_ref,
        }
        payment = {
            "order_id": order_id,
            "provider": charge.provider,
            "provider_ref": charge.provider_ref,
            "kind": "pay",
            "amount_fen": charge.amount_fen,
            "status": SUCCEEDED,
            "idempotency_key": idempotency_key,
            "created_at": now,
        }
        conn = self.conn
        if conn.dialect.name == "postgresql":
            paid = await conn.execute(
                _PG_MARK_PAID,
                {
                    **payment,
                    "service_date": order.service_date,
                    "paid": PaymentStatus.PAID.value,
                    "ticket_paid": TicketStatus.PAID.value,
                    "unpaid": TicketStatus.UNPAID.value,
                    "payload": json.dumps(event),
                },
            )
            return [int(p) for p in paid.scalars()]
        await conn.execute(
            update(Order)
            .where(_order.id == order_id)
            .values(payment_status=PaymentStatus.PAID.value, updated_at=now)
        )
        paid = await conn.execute(
            update(Ticket)
            .where(_ticket.order_id == order_id, _ticket.status == TicketStatus.UNPAID.value)
            .values(status=TicketStatus.PAID.value, updated_at=now)
            .returning(_ticket.passenger_id)
        )
        passengers = [int(p) for p in paid.scalars()]
        await conn.execute(insert(Payment).values(**payment))
        await conn.execute(
            insert(Outbox).values(topic=PAID_TOPIC, key=order_id, payload=event, created_at=now)
        )
        return passengers


PAID_TOPIC = "order.paid"
# PostgreSQL: the four writes of a payment in one statement (one round trip, one plan prepared per
# connection); the data-modifying CTEs all run, whether or not the outer query reads them. The
# locked order's service date names the one partition of ``order`` and ``ticket`` they touch.
_PG_MARK_PAID = text(
    f"""
    WITH paid_order AS (
        UPDATE "order" SET payment_status = :paid, updated_at = :created_at
        WHERE id = :order_id AND service_date = :service_date
    ), paid_tickets AS (
        UPDATE ticket SET status = :ticket_paid, updated_at = :created_at
        WHERE order_id = :order_id AND service_date = :service_date AND status = :unpaid
        RETURNING passenger_id
    ), payment_row AS (
        INSERT INTO payment (order_id, provider, provider_ref, kind, amount_fen, status,
            idempotency_key, created_at)
        VALUES (:order_id, :provider, :provider_ref, :kind, :amount_fen, :status, :idempotency_key,
            :created_at)
    ), event_row AS (
        INSERT INTO outbox (topic, key, payload, created_at)
        VALUES ('{PAID_TOPIC}', :order_id, CAST(:payload AS json), :created_at)
    )
    SELECT passenger_id FROM paid_tickets
    """
)


class SqlPaymentStore:
    """Payments in the system of record."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[PaymentTx]:
        """One payment transaction; losing the unique (provider, provider_ref) raises
        ``PaymentAlreadyRecorded``."""
        try:
            async with self._engine.begin() as conn:
                yield PaymentTx(conn)
        except IntegrityError as exc:
            raise PaymentAlreadyRecorded(str(exc)[:200]) from exc
