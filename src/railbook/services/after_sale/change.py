"""Changing a paid ticket (改签) to another train, date, seat class or destination (变更到站).

A ticket is changed once: a ticket that came from a change is ``ALREADY_CHANGED``. The change places
a new order for the same passenger, credited with the old fare, so nobody pays a ticket twice: the
new order's ``total`` is what is still owed (``booking.ports.owed_fen``). The old ticket stays valid,
with its seat, until the change is settled:

- a new order that owes nothing (equal or lower fare) is settled as soon as it holds its seats: it
  is ``PAID`` at once (the old fare moved onto it), the old ticket ``CHANGED`` and its seat returned,
  and the difference refunded less the refund fee of its band (``domain.fees.refund_quote``, quoted
  when the change was asked for);
- a new order that owes the difference (higher fare) is settled when the member pays it with
  ``/pay`` before its deadline; unpaid, it is cancelled like any order and the old ticket stays
  ``PAID``;
- a new order that could not be seated (sold out, failed) abandons the change: nothing else moved.

Money balances: what the member paid less what was refunded equals the fares of the tickets held
plus the fees kept. Locks, in this order everywhere: the change, the new order, the old order, the
old ticket (order before ticket, as a payment and a refund lock them).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from railbook.domain.errors import (
    AlreadyChanged,
    AmountMismatch,
    ChangeAfterDeparture,
    ChangeInProgress,
    InvalidInput,
    NotChangeable,
    NotPayable,
    OrderNotFound,
)
from railbook.domain.fees import RefundAfterDeparture, RefundQuote, refund_quote
from railbook.domain.order_state import ChangeStatus, OrderStatus, PaymentStatus, TicketStatus
from railbook.kit.clock import as_utc, beijing_today, utcnow
from railbook.services.after_sale.cancel import cancel_rows, return_seats_of_orders
from railbook.services.after_sale.payment import check_payable, payment_provider, require_order
from railbook.services.after_sale.ports import (
    CHANGE_REFUND_REF_PREFIX,
    AfterSaleContext,
    ChangeTx,
    Charge,
    PaymentProvider,
    TicketRecord,
)
from railbook.services.after_sale.refund import departure_of, require_ticket, return_seats_of_tickets
from railbook.services.booking.accept import Accepted, OrderRequest, PassengerChoice, place_order
from railbook.services.booking.markers import forget_order_markers
from railbook.services.booking.ports import OrderMessage
from railbook.services.booking.train_days import journey_on, train_day
from railbook.services.booking.trips import forget_passenger_trips
from railbook.services.booking.view_cache import forget_order_views

log = structlog.get_logger(__name__)

# A change whose new order never reached the database (the accept was lost) is given up after this.
CHANGE_ORPHAN_AFTER = dt.timedelta(minutes=30)
CHANGE_PROVIDER = "change"
ABANDONED = ChangeStatus.ABANDONED.value
DONE = ChangeStatus.DONE.value


async def change_ticket(
    container: AfterSaleContext,
    *,
    member_id: int,
    ticket_id: str,
    date: dt.date,
    train_code: str,
    seat_class: str,
    to_station: str | None = None,
    client_ip: str = "",
    now: dt.datetime | None = None,
) -> Accepted:
    """Ask for the same passenger on another train, date or class (or, on the same train, to another
    destination), credited with the old fare; the old ticket stays valid until the change is settled."""
    now = now or utcnow()
    async with container.ticket_changes.reading() as read:
        ticket = require_ticket(await read.member_ticket(member_id, ticket_id), ticket_id)
        if ticket.status == TicketStatus.CHANGED:
            raise AlreadyChanged("This ticket has been changed already; a ticket is changed only once.")
        if ticket.status != TicketStatus.PAID:
            raise NotChangeable(
                f"The ticket is {ticket.status}; only a paid ticket can be changed.",
                details={"status": ticket.status},
            )
        if await read.came_from_change(ticket.order_id):
            raise AlreadyChanged("This ticket came from a change; a ticket is changed only once.")
        order = await read.order(ticket.order_id)
        stop = await read.stop_time(ticket.daily_train_id, ticket.from_index)
        if departure_of(ticket, order.service_date, stop) <= now:
            raise ChangeAfterDeparture("The train has already left; the ticket cannot be changed.")
        if await read.change_in_progress(ticket_id):
            raise ChangeInProgress("A change of this ticket is already in progress.")
    destination = order.to_station
    if to_station is not None:
        day = await train_day(container, train_code, date, today=beijing_today(now))
        _, j = journey_on(day, order.from_station, to_station)
        destination = day.station_names[j]
        if destination != order.to_station and (
            day.train_code != order.train_code or day.date != order.service_date
        ):
            raise InvalidInput(
                "A new destination is changed to on the ticket's own train and date only.",
                details={"fields": [{"field": "to", "message": "only on the same train and date"}]},
            )
    request = OrderRequest(
        date=date,
        train_code=train_code,
        from_station=order.from_station,
        to_station=destination,
        passengers=(PassengerChoice(ticket.passenger_id, seat_class),),
        change_of=ticket_id,
        credit_fen=ticket.price_fen,
    )
    accepted = await place_order(
        container, member_id=member_id, request=request, client_ip=client_ip, replaces=ticket.order_id
    )
    await container.ticket_changes.add_change(
        ticket_id=ticket_id, member_id=member_id, new_order_id=accepted.order_id, now=now
    )
    log.info("ticket_change_requested", ticket_id=ticket_id, new_order_id=accepted.order_id)
    return accepted


@dataclass(frozen=True, slots=True)
class _Payment:
    """The member paying what a change still owes: charged now, or already charged (a callback)."""

    member_id: int | None
    provider: PaymentProvider
    idempotency_key: str | None = None
    charged: Charge | None = None


@dataclass(frozen=True, slots=True)
class _Outcome:
    kind: str  # "changed" or "cancelled"
    old_ticket_id: str
    new_order_id: str
    touched: list[tuple[str, int]]  # (order, member) whose views changed


async def apply_changes(
    container: AfterSaleContext, *, now: dt.datetime | None = None, limit: int = 100
) -> int:
    """Settle the pending changes that can be: a new order owing nothing is paid with the old fare,
    a refused or cancelled new order abandons its change; a new order owing the difference waits for
    its payment. Each change in its own transaction, its row locked (SKIP LOCKED), so two workers
    never settle one change twice."""
    now = now or utcnow()
    applied = 0
    for change_id in await container.ticket_changes.pending_changes(limit):
        if await _settle_and_return(container, change_id, now, None, wait=False) == "changed":
            applied += 1
    return applied


async def settle_committed_changes(
    container: AfterSaleContext, messages: Sequence[OrderMessage], *, now: dt.datetime | None = None
) -> int:
    """Right after the committer wrote these orders: settle the changes among them at once, so a new
    order that owes nothing reads ``PAID`` as soon as it holds its seats (the after-sale loop would
    otherwise do it within a second). The change row is written here if the request has not yet."""
    now = now or utcnow()
    applied = 0
    for msg in messages:
        if not msg.change_of:
            continue
        await container.ticket_changes.add_change(
            ticket_id=msg.change_of, member_id=msg.member_id, new_order_id=msg.order_id, now=msg.created_at
        )
        change_id = await container.ticket_changes.pending_change_of_order(msg.order_id)
        if change_id is None:
            continue
        if await _settle_and_return(container, change_id, now, None, wait=True) == "changed":
            applied += 1
    return applied


async def pay_change(
    container: AfterSaleContext,
    *,
    change_id: int,
    member_id: int | None,
    provider: PaymentProvider,
    idempotency_key: str | None = None,
    charged: Charge | None = None,
    now: dt.datetime | None = None,
) -> None:
    """Pay what a change's new order still owes (``/pay``, or a provider's callback with ``charged``)
    and settle the change; NOT_PAYABLE when the old ticket was refunded meanwhile (the new order is
    then cancelled), PAY_DEADLINE_PASSED after the deadline."""
    payment = _Payment(member_id, provider, idempotency_key, charged)
    outcome = await _settle_and_return(container, change_id, now or utcnow(), payment, wait=True)
    if outcome == "cancelled":
        raise NotPayable("The ticket this order changes is no longer paid; the change was cancelled.")


async def _settle_and_return(
    container: AfterSaleContext, change_id: int, now: dt.datetime, payment: _Payment | None, *, wait: bool
) -> str | None:
    """Settle one change, then do what follows its commit: views, seats, duplicate markers."""
    outcome = await _settle(container, change_id, now, payment, wait=wait)
    if outcome is None:
        return None
    await forget_order_views(container, outcome.touched)
    if outcome.kind == "changed":
        # The new order is paid: its markers go as a payment's do; the old seat goes back on sale.
        await forget_order_markers(container, [outcome.new_order_id])
        await return_seats_of_tickets(container, [outcome.old_ticket_id])
        # The old ticket's trip goes: its passenger now travels on the new order's.
        new_order = outcome.new_order_id
        riders = [p for o, _, _, _, p in await container.orders.order_holds([new_order]) if o == new_order]
        await forget_passenger_trips(container, [(outcome.touched[0][0], riders)])
    else:
        await return_seats_of_orders(container, [outcome.new_order_id])
    return outcome.kind


async def _settle(
    container: AfterSaleContext, change_id: int, now: dt.datetime, payment: _Payment | None, *, wait: bool
) -> _Outcome | None:
    """One change's decision in one transaction (see the module docstring for the rules and locks)."""
    async with container.ticket_changes.transaction() as tx:
        change = await tx.lock_pending_change(change_id, wait=wait)
        if change is None:
            return None
        if payment is not None and payment.member_id not in (None, change.member_id):
            raise OrderNotFound("No such order.", details={"order_id": change.new_order_id})
        new = await tx.lock_new_order(change.new_order_id)
        if new is None or new.status in (OrderStatus.INIT, OrderStatus.PENDING):
            if new is None and as_utc(change.created_at) < now - CHANGE_ORPHAN_AFTER:
                await tx.set_change_status(change.id, ABANDONED, now=now)
            if payment is not None:
                raise NotPayable("The order does not hold its seats yet; it cannot be paid.")
            return None
        if new.status != OrderStatus.SUCCESS or new.payment_status != PaymentStatus.UNPAID:
            # Sold out, failed, cancelled or expired: the old ticket keeps its seat and its fare.
            await tx.set_change_status(change.id, ABANDONED, now=now)
            if payment is not None:
                check_payable(new, now)  # the deadline passed, or not payable
            return None
        old_order_id = await tx.order_of_ticket(change.ticket_id)
        old_order = require_order(await tx.lock_order(old_order_id), old_order_id)
        old = await tx.lock_ticket(change.ticket_id)
        if old.status != TicketStatus.PAID:
            # Refunded meanwhile: the new order must not stand on a fare paid back.
            await tx.set_change_status(change.id, ABANDONED, now=now)
            await cancel_rows(tx, new, reason="cancelled", now=now)
            return _Outcome("cancelled", old.id, new.id, [(new.id, new.member_id)])
        if payment is None and new.total_fen > 0:
            return None  # the difference is owed: settled when the member pays it
        if payment is not None:
            check_payable(new, now)
        fare = await tx.fare_of(new.id)
        tx.add_payment(
            new.id, Charge(CHANGE_PROVIDER, f"change-{old.id}", min(old.price_fen, fare)), kind="pay", now=now
        )
        if new.total_fen > 0:
            assert payment is not None
            charge = payment.charged
            if charge is None:
                charge = await payment.provider.charge(
                    order_id=new.id, amount_fen=new.total_fen, idempotency_key=payment.idempotency_key
                )
            elif charge.amount_fen != new.total_fen:
                raise AmountMismatch(
                    "The amount does not match the order.",
                    details={"expected_fen": new.total_fen, "got_fen": charge.amount_fen},
                )
            tx.add_payment(new.id, charge, kind="pay", now=now, idempotency_key=payment.idempotency_key)
        quote = await _refund_of_difference(
            container, tx, old, old_order.service_date, fare, change.created_at, now
        )
        await tx.mark_changed(old.id, now=now)
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
                "paid_fen": new.total_fen,
                "refund_fen": quote.refund_fen,
                "fee_fen": quote.fee_fen,
            },
            now=now,
        )
    log.info(
        "ticket_changed",
        ticket_id=change.ticket_id,
        new_order_id=change.new_order_id,
        paid_fen=new.total_fen,
        refund_fen=quote.refund_fen,
        fee_fen=quote.fee_fen,
    )
    touched = [(old_order.id, old_order.member_id), (new.id, new.member_id)]
    return _Outcome("changed", old.id, new.id, touched)


def change_refund_ref(ticket_id: str) -> str:
    """Our reference on the refund of a change's difference (the payment row of the old order)."""
    return CHANGE_REFUND_REF_PREFIX + ticket_id


async def _refund_of_difference(
    container: AfterSaleContext,
    tx: ChangeTx,
    old: TicketRecord,
    service_date: dt.date,
    fare: int,
    asked_at: dt.datetime,
    now: dt.datetime,
) -> RefundQuote:
    """Refund what the old fare paid beyond the new one, less the fee of the band the change was asked
    in (the same quote as a refund); recorded on the old order, our own reference on the row."""
    difference = old.price_fen - fare
    if difference <= 0:
        return RefundQuote(refund_fen=0, fee_fen=0)
    departs = departure_of(old, service_date, await tx.stop_time(old.daily_train_id, old.from_index))
    try:
        quote = refund_quote(difference, departs, as_utc(asked_at))
    except RefundAfterDeparture:  # asked before departure (checked), so only a clock step lands here
        quote = refund_quote(difference, departs, departs - dt.timedelta(seconds=1))
    if quote.refund_fen:
        provider = payment_provider(container)
        await provider.refund(order_id=old.order_id, amount_fen=quote.refund_fen, reference=f"chg-{old.id}")
        tx.add_payment(
            old.order_id,
            Charge(provider.name, change_refund_ref(old.id), quote.refund_fen),
            kind="refund",
            now=now,
            fee_fen=quote.fee_fen,
        )
        # Money went back on the old order, as a refund of one of its tickets shows it.
        await tx.set_payment_status(old.order_id, PaymentStatus.PARTLY_REFUNDED.value, now=now)
    return quote


__all__ = ["apply_changes", "change_ticket", "pay_change", "settle_committed_changes"]
