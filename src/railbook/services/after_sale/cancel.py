"""Cancelling unpaid orders (by the member, or when the pay deadline passes) and giving the seats back.

The state change is committed first; the seats go back to the allocator afterwards, with a
release id per order (``cancel:<order id>``) that the allocator remembers, so a repeated release
changes nothing. ``order.released_at`` records that the release happened: a ``CANCEL`` order
without it is released again by the expiry job, so a crash between the commit and the release
only delays the seats' return, never loses them. A day rebuilt from the system of record after the
cancel committed (a Redis wipe) already shows the seats free and holds the release id as done, so a
release landing after the rebuild cannot free a seat the new copy sold again.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

import structlog
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from railbook.adapters.db.models import Order, Outbox, Ticket
from railbook.domain.errors import NotCancellable
from railbook.domain.order_state import OrderStatus, PaymentStatus, TicketStatus, transition
from railbook.kit.clock import utcnow
from railbook.services.after_sale.payment import lock_order
from railbook.services.booking.accept import OrderContext, forget_markers
from railbook.services.ports import HeldSeat
from railbook.services.sales.service import order_release_id

log = structlog.get_logger(__name__)

EXPIRY_BATCH = 100
# A CANCEL order younger than this may still be releasing in the process that cancelled it.
RERELEASE_AFTER = dt.timedelta(seconds=5)


def release_id_of_order(order_id: str) -> str:
    """The same id a rebuild of the day marks done when its snapshot already shows the seats free."""
    return order_release_id(order_id)


async def cancel_rows(session: AsyncSession, order: Order, *, reason: str, now: dt.datetime) -> None:
    """Move a held order to CANCEL and its unpaid tickets to CANCELLED (the caller holds the row lock)."""
    order.status = transition(order.status, OrderStatus.CANCEL).value
    order.updated_at = now
    order.released_at = None
    await session.execute(
        update(Ticket)
        .where(Ticket.order_id == order.id, Ticket.status == TicketStatus.UNPAID.value)
        .values(status=TicketStatus.CANCELLED.value, updated_at=now)
    )
    session.add(
        Outbox(
            topic=f"order.{reason}",
            key=order.id,
            created_at=now,
            payload={
                "order_id": order.id,
                "member_id": order.member_id,
                "train_code": order.train_code,
                "date": order.service_date.isoformat(),
            },
        )
    )


async def cancel_order(
    container: OrderContext, *, member_id: int, order_id: str, now: dt.datetime | None = None
) -> str:
    """Cancel the member's unpaid order and put its seats back on sale; cancelling twice is a no-op."""
    now = now or utcnow()
    async with container.sessionmaker() as session, session.begin():
        order = await lock_order(session, order_id, member_id)
        if order.status == OrderStatus.CANCEL:
            pending_release = order.released_at is None
        elif order.status == OrderStatus.SUCCESS and order.payment_status == PaymentStatus.UNPAID:
            await cancel_rows(session, order, reason="cancelled", now=now)
            pending_release = True
        else:
            raise NotCancellable(
                f"The order is {order.status} / {order.payment_status}; only an unpaid order with "
                "seats held can be cancelled (refund paid tickets instead).",
                details={"status": order.status, "payment_status": order.payment_status},
            )
    if pending_release:
        await release_orders(container, [order_id])
    return order_id


async def release_orders(container: OrderContext, order_ids: list[str]) -> int:
    """Give the seats of these CANCEL orders back and stamp ``released_at``; returns how many were
    released. A failing allocator leaves ``released_at`` NULL for the expiry job to retry."""
    if not order_ids:
        return 0
    async with container.sessionmaker() as session:
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
    by_order: dict[str, list[Ticket]] = defaultdict(list)
    for t in tickets:
        by_order[t.order_id].append(t)
    done: list[str] = []
    days: set[tuple[str, dt.date]] = set()
    # Cancelled: the passengers may be booked on the train-day again (their markers go first).
    cancelled = [o for o in orders if o.status == OrderStatus.CANCEL]
    await forget_markers(
        container,
        [
            (
                o.train_code,
                o.service_date,
                o.id,
                o.member_id,
                [t.passenger_id for t in by_order.get(o.id, [])],
            )
            for o in cancelled
        ],
    )
    for order in orders:
        if order.status != OrderStatus.CANCEL:
            continue
        held = by_order.get(order.id, [])
        try:
            if held:
                await container.allocator.release(
                    order.train_code,
                    order.service_date,
                    order.from_index,
                    order.to_index,
                    [HeldSeat(t.seat_class, t.seat_index) for t in held],
                    release_id=release_id_of_order(order.id),
                )
                days.add((order.train_code, order.service_date))
        except Exception as exc:
            log.warning("release_failed", order_id=order.id, error=repr(exc)[:200])
            continue
        done.append(order.id)
    if done:
        async with container.sessionmaker() as session, session.begin():
            await session.execute(update(Order).where(Order.id.in_(done)).values(released_at=utcnow()))
    await after_release(container, days)
    return len(done)


async def after_release(container: OrderContext, days: set[tuple[str, dt.date]]) -> None:
    """Seats returned to these train-days: waiting members are served first."""
    if not days:
        return
    from railbook.services.after_sale.waitlist import fill_train_day

    for train_code, date in sorted(days):
        try:
            await fill_train_day(container, train_code, date)
        except Exception as exc:  # the expiry job sweeps waitlists again
            log.warning("waitlist_fill_failed", train_code=train_code, date=str(date), error=repr(exc)[:200])


async def expire_unpaid(
    container: OrderContext, *, now: dt.datetime | None = None, limit: int = EXPIRY_BATCH
) -> list[str]:
    """Cancel held orders whose pay deadline has passed, and release their seats.

    Several expiry processes may run: on PostgreSQL each takes its batch with ``FOR UPDATE SKIP
    LOCKED``, so an order is expired by exactly one of them and a payment holding the row lock is
    never overtaken (the payer sees the order paid or the deadline passed, never both). SQLite
    ignores the clause; there the write transaction itself serialises the processes.
    """
    now = now or utcnow()
    async with container.sessionmaker() as session, session.begin():
        due = (
            (
                await session.execute(
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
            await cancel_rows(session, order, reason="expired", now=now)
        expired = [o.id for o in due]
    if expired:
        log.info("orders_expired", count=len(expired))
        await release_orders(container, expired)
    return expired


async def rerelease_cancelled(
    container: OrderContext, *, now: dt.datetime | None = None, limit: int = EXPIRY_BATCH
) -> int:
    """Release again the CANCEL orders whose release was never confirmed (idempotent per order)."""
    now = now or utcnow()
    async with container.sessionmaker() as session:
        ids = list(
            (
                await session.execute(
                    select(Order.id)
                    .where(
                        Order.status == OrderStatus.CANCEL.value,
                        Order.released_at.is_(None),
                        Order.updated_at <= now - RERELEASE_AFTER,
                    )
                    .order_by(Order.updated_at)
                    .limit(limit)
                )
            ).scalars()
        )
    return await release_orders(container, ids)


__all__ = [
    "cancel_order",
    "cancel_rows",
    "expire_unpaid",
    "release_id_of_order",
    "release_orders",
    "rerelease_cancelled",
]
