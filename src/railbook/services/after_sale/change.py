"""Changing a paid ticket to another train or date.

A change places a new order for the same passenger and stations on another train or date; the old
ticket becomes ``CHANGED`` only once the new order holds its seats (``SUCCESS``), and the new order
is then settled with the old fare (the difference charged or refunded through the provider). Until
then the old ticket stays valid. The old ticket's seat goes back after the commit, as a refund's does.
"""

from __future__ import annotations

import datetime as dt

import structlog

from railbook.domain.errors import ChangeAfterDeparture, ChangeInProgress, NotChangeable
from railbook.domain.order_state import OrderStatus, PaymentStatus, TicketStatus
from railbook.kit.clock import as_utc, utcnow
from railbook.services.after_sale.cancel import cancel_rows, return_seats_of_orders
from railbook.services.after_sale.payment import payment_provider, require_order
from railbook.services.after_sale.ports import AfterSaleContext, Charge
from railbook.services.after_sale.refund import departure_of, require_ticket, return_seats_of_tickets
from railbook.services.booking.accept import Accepted, OrderRequest, PassengerChoice, place_order
from railbook.services.booking.markers import forget_order_markers
from railbook.services.booking.trips import forget_trips
from railbook.services.booking.view_cache import forget_order_views

log = structlog.get_logger(__name__)

# A change whose new order never reached the database (the accept was lost) is given up after this.
CHANGE_ORPHAN_AFTER = dt.timedelta(minutes=30)
CHANGE_PROVIDER = "change"
ABANDONED = "ABANDONED"
DONE = "DONE"


async def change_ticket(
    container: AfterSaleContext,
    *,
    member_id: int,
    ticket_id: str,
    date: dt.date,
    train_code: str,
    seat_class: str,
    client_ip: str = "",
    now: dt.datetime | None = None,
) -> Accepted:
    """Ask for the same passenger and stations on another train/date; the old ticket stays valid
    until the new order holds its seats (``apply_changes``)."""
    now = now or utcnow()
    async with container.ticket_changes.reading() as read:
        ticket = require_ticket(await read.member_ticket(member_id, ticket_id), ticket_id)
        if ticket.status != TicketStatus.PAID:
            raise NotChangeable(
                f"The ticket is {ticket.status}; only a paid ticket can be changed.",
                details={"status": ticket.status},
            )
        order = await read.order(ticket.order_id)
        stop = await read.stop_time(ticket.daily_train_id, ticket.from_index)
        if departure_of(ticket, order.service_date, stop) <= now:
            raise ChangeAfterDeparture("The train has already left; the ticket cannot be changed.")
        if await read.change_in_progress(ticket_id):
            raise ChangeInProgress("A change of this ticket is already in progress.")
    request = OrderRequest(
        date=date,
        train_code=train_code,
        from_station=order.from_station,
        to_station=order.to_station,
        passengers=(PassengerChoice(ticket.passenger_id, seat_class),),
    )
    accepted = await place_order(
        container, member_id=member_id, request=request, client_ip=client_ip, replaces=ticket.order_id
    )
    await container.ticket_changes.add_change(
        ticket_id=ticket_id, member_id=member_id, new_order_id=accepted.order_id, now=now
    )
    log.info("ticket_change_requested", ticket_id=ticket_id, new_order_id=accepted.order_id)
    return accepted


async def apply_changes(
    container: AfterSaleContext, *, now: dt.datetime | None = None, limit: int = 100
) -> int:
    """Complete pending changes whose new order has an answer: SUCCESS makes the old ticket CHANGED
    (its seat returned) and settles the new order with the old fare; a refused new order abandons
    the change. Each change is decided in its own transaction, its row locked (SKIP LOCKED), so two
    workers never apply one change twice."""
    now = now or utcnow()
    applied = 0
    for change_id in await container.ticket_changes.pending_changes(limit):
        outcome = await _apply_change(container, change_id, now)
        if outcome is None:
            continue
        kind, target, touched = outcome
        await forget_order_views(container, touched)
        if kind == "changed":
            applied += 1
            await return_seats_of_tickets(container, [target])
            # The new order was paid with the old fare: its markers go as a payment's do.
            new_order = await container.ticket_changes.new_order_of(change_id)
            if new_order:
                await forget_order_markers(container, [new_order])
                # The old ticket's trip goes: its passenger now travels on the new order's.
                riders = [
                    p for o, _, _, _, p in await container.orders.order_holds([new_order]) if o == new_order
                ]
                await forget_trips(container, [(touched[0][0], riders)])
        elif kind == "cancelled":
            await return_seats_of_orders(container, [target])
    return applied


async def _apply_change(
    container: AfterSaleContext, change_id: int, now: dt.datetime
) -> tuple[str, str, list[tuple[str, int]]] | None:
    """Settle one change: (what was done, to what, the (order, member) it changed). Locks the change,
    then the new order, then the old order and its ticket (order before ticket, as a payment and a
    refund lock them)."""
    provider = payment_provider(container)
    async with container.ticket_changes.transaction() as tx:
        change = await tx.lock_pending_change(change_id)
        if change is None:
            return None
        new = await tx.lock_new_order(change.new_order_id)
        if new is None or new.status in (OrderStatus.INIT, OrderStatus.PENDING):
            if new is None and as_utc(change.created_at) < now - CHANGE_ORPHAN_AFTER:
                await tx.set_change_status(change.id, ABANDONED, now=now)
            return None
        if new.status != OrderStatus.SUCCESS:
            await tx.set_change_status(change.id, ABANDONED, now=now)
            return None
        old_order_id = await tx.order_of_ticket(change.ticket_id)
        old_order = require_order(await tx.lock_order(old_order_id), old_order_id)
        old = await tx.lock_ticket(change.ticket_id)
        if old.status != TicketStatus.PAID or new.payment_status != PaymentStatus.UNPAID:
            # The old ticket was refunded or changed meanwhile (or the new order was paid some other
            # way): the new order must not stand on the old fare.
            await tx.set_change_status(change.id, ABANDONED, now=now)
            if new.payment_status == PaymentStatus.UNPAID:
                await cancel_rows(tx, new, reason="cancelled", now=now)
                return ("cancelled", new.id, [(new.id, new.member_id)])
            return None
        await tx.mark_changed(old.id, now=now)
        covered = min(old.price_fen, new.total_fen)
        tx.add_payment(new.id, Charge(CHANGE_PROVIDER, f"change-{old.id}", covered), kind="pay", now=now)
        if new.total_fen > old.price_fen:
            charge = await provider.charge(
                order_id=new.id, amount_fen=new.total_fen - old.price_fen, idempotency_key=None
            )
            tx.add_payment(new.id, charge, kind="pay", now=now)
        elif new.total_fen < old.price_fen:
            back = await provider.refund(
                order_id=old_order.id, amount_fen=old.price_fen - new.total_fen, reference=f"chg-{old.id}"
            )
            tx.add_payment(old_order.id, back, kind="refund", now=now)
        await tx.mark_paid(new.id, now=now)
        await tx.set_change_status(change.id, DONE, now=now)
        tx.add_event(
            "ticket.changed",
            old.id,
            {
                "ticket_id": old.id,
                "old_order_id": old_order.id,
                "new_order_id": new.id,
                "member_id": change.member_id,
            },
            now=now,
        )
    log.info("ticket_changed", ticket_id=change.ticket_id, new_order_id=change.new_order_id)
    return ("changed", change.ticket_id, [(old_order.id, old_order.member_id), (new.id, new.member_id)])


__all__ = ["apply_changes", "change_ticket"]
