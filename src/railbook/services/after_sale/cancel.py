"""Cancelling unpaid orders (by the member, or when the pay deadline passes) and returning their seats.

The state change is committed first; the seats go back to the allocator afterwards, with a
release id per order (``cancel:<order id>``) that the allocator remembers, so a repeated release
changes nothing. ``order.released_at`` records that the seats went back: a ``CANCEL`` order
without it has its seats returned again by the expiry job, so a crash between the commit and the
return only delays the seats, never loses them. A day rebuilt from the system of record after the
cancel committed (a Redis wipe) already shows the seats free and holds the release id as done, so a
release landing after the rebuild cannot free a seat the new copy sold again.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import replace

import structlog

from railbook.domain.errors import NotCancellable
from railbook.domain.order_state import OrderStatus, PaymentStatus, transition
from railbook.kit.clock import utcnow
from railbook.services.after_sale.payment import require_order
from railbook.services.after_sale.ports import AfterSaleContext, OrderCanceller, OrderRecord, TicketRecord
from railbook.services.booking.markers import forget_markers
from railbook.services.booking.trips import forget_passenger_trips
from railbook.services.booking.view_cache import forget_order_views
from railbook.services.ports import HeldSeat
from railbook.services.sales.releases import order_release_id

log = structlog.get_logger(__name__)

EXPIRY_BATCH = 100
# A CANCEL order younger than this may still be returning its seats in the process that cancelled it.
RETURN_RETRY_AFTER = dt.timedelta(seconds=5)


def release_id_of_order(order_id: str) -> str:
    """The same id a rebuild of the day marks done when its snapshot already shows the seats free."""
    return order_release_id(order_id)


async def cancel_rows(
    tx: OrderCanceller, order: OrderRecord, *, reason: str, now: dt.datetime
) -> list[TicketRecord]:
    """Move a held order to CANCEL and its unpaid tickets to CANCELLED, with an ``order.<reason>``
    event (the transaction holds the order's row lock); returns the tickets cancelled."""
    transition(order.status, OrderStatus.CANCEL)
    cancelled = await tx.cancel_order(order.id, now=now)
    tx.add_event(
        f"order.{reason}",
        order.id,
        {
            "order_id": order.id,
            "member_id": order.member_id,
            "train_code": order.train_code,
            "date": order.service_date.isoformat(),
        },
        now=now,
    )
    return cancelled


async def cancel_order(
    container: AfterSaleContext, *, member_id: int, order_id: str, now: dt.datetime | None = None
) -> bool:
    """Cancel the member's unpaid order and put its seats back on sale; cancelling twice is a no-op.
    True when this call moved the order from held and unpaid to cancelled."""
    now = now or utcnow()
    cancelled: dict[str, tuple[OrderRecord, list[TicketRecord]]] = {}
    async with container.cancellations.transaction() as tx:
        locked = await tx.lock_order(order_id, member_id)
        order = require_order(locked, order_id, queued=(container, member_id, NotCancellable))
        if order.status == OrderStatus.CANCEL:
            seats_pending = order.released_at is None
        elif order.status == OrderStatus.SUCCESS and order.payment_status == PaymentStatus.UNPAID:
            tickets = await cancel_rows(tx, order, reason="cancelled", now=now)
            cancelled[order.id] = (replace(order, status=OrderStatus.CANCEL.value), tickets)
            seats_pending = True
        else:
            raise NotCancellable(
                f"The order is {order.status} / {order.payment_status}; only an unpaid order with "
                "seats held can be cancelled (refund paid tickets instead).",
                details={"status": order.status, "payment_status": order.payment_status},
            )
    await forget_order_views(container, [(order_id, order.member_id)])
    if seats_pending:
        await return_seats_of_orders(container, [order_id], cancelled=cancelled)
    return bool(cancelled)


async def return_seats_of_orders(
    container: AfterSaleContext,
    order_ids: list[str],
    *,
    cancelled: Mapping[str, tuple[OrderRecord, list[TicketRecord]]] | None = None,
) -> int:
    """Give the seats of these CANCEL orders back to the allocator and stamp ``released_at``; returns
    how many orders had their seats returned. A failing allocator leaves ``released_at`` NULL for
    the expiry job to retry. ``cancelled``: the orders and tickets the cancelling transaction has
    just written, when it has them all (else they are read)."""
    if not order_ids:
        return 0
    by_order: dict[str, list[TicketRecord]] = defaultdict(list)
    if cancelled is not None and all(o in cancelled for o in order_ids):
        orders = [cancelled[o][0] for o in order_ids]
        for o in order_ids:
            by_order[o].extend(cancelled[o][1])
    else:
        orders, tickets = await container.cancellations.orders_with_cancelled_tickets(order_ids)
        for t in tickets:
            by_order[t.order_id].append(t)
    done: list[str] = []
    days: set[tuple[str, dt.date]] = set()
    # Cancelled: the passengers may be booked on the train-day again, and may travel at that time
    # again (markers and trips are forgotten in one round trip, before the seats go back).
    gone = [o for o in orders if o.status == OrderStatus.CANCEL]
    passengers = {o.id: [t.passenger_id for t in by_order.get(o.id, [])] for o in gone}
    await asyncio.gather(
        forget_markers(
            container, [(o.train_code, o.service_date, o.id, o.member_id, passengers[o.id]) for o in gone]
        ),
        forget_passenger_trips(container, [(o.id, passengers[o.id]) for o in gone]),
    )
    for order in gone:
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
        await container.cancellations.stamp_orders_returned(done, utcnow())
    await container.search_changes.train_days_changed(days)
    await serve_waitlists(container, days)
    return len(done)


async def serve_waitlists(container: AfterSaleContext, days: set[tuple[str, dt.date]]) -> None:
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
    container: AfterSaleContext, *, now: dt.datetime | None = None, limit: int = EXPIRY_BATCH
) -> list[str]:
    """Cancel held orders whose pay deadline has passed, and return their seats.

    Several expiry processes may run: on PostgreSQL each takes its batch with ``FOR UPDATE SKIP
    LOCKED``, so an order is expired by exactly one of them and a payment holding the row lock is
    never overtaken (the payer sees the order paid or the deadline passed, never both). SQLite
    ignores the clause; there the write transaction itself serialises the processes.
    """
    now = now or utcnow()
    cancelled: dict[str, tuple[OrderRecord, list[TicketRecord]]] = {}
    async with container.cancellations.transaction() as tx:
        due = await tx.lock_due_orders(now, limit)
        for order in due:
            tickets = await cancel_rows(tx, order, reason="expired", now=now)
            cancelled[order.id] = (replace(order, status=OrderStatus.CANCEL.value), tickets)
        expired = [o.id for o in due]
    await forget_order_views(container, [(o.id, o.member_id) for o in due])
    if expired:
        log.info("orders_expired", count=len(expired))
        await return_seats_of_orders(container, expired, cancelled=cancelled)
    return expired


async def retry_order_seat_returns(
    container: AfterSaleContext, *, now: dt.datetime | None = None, limit: int = EXPIRY_BATCH
) -> int:
    """Return again the seats of CANCEL orders whose return was never confirmed (idempotent per order)."""
    now = now or utcnow()
    ids = await container.cancellations.unreturned_orders(now - RETURN_RETRY_AFTER, limit)
    return await return_seats_of_orders(container, ids)


__all__ = [
    "cancel_order",
    "cancel_rows",
    "expire_unpaid",
    "release_id_of_order",
    "retry_order_seat_returns",
    "return_seats_of_orders",
    "serve_waitlists",
]
