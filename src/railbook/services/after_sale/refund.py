"""Refunding paid tickets, and returning the seats of refunded or changed tickets.

A refund moves one ``PAID`` ticket to ``REFUNDED``, pays back the fare less the fee the 12306
rules charge for the time left before departure, and gives that seat back for that journey only
(release id ``refund:<ticket id>``).

Seats go back after the commit; ``ticket.released_at`` records it, and the expiry job returns
again the seat of any refunded or changed ticket without it (releases are idempotent per release id).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from railbook.domain.errors import NotRefundable, StopNotFound, TicketNotFound
from railbook.domain.fees import RefundQuote, departure_at, refund_quote
from railbook.domain.order_state import PaymentStatus, TicketStatus
from railbook.kit.clock import utcnow
from railbook.services.after_sale.cancel import serve_waitlists
from railbook.services.after_sale.payment import payment_provider, require_order
from railbook.services.after_sale.ports import (
    REFUND_REF_PREFIX,
    AfterSaleContext,
    Charge,
    StopTime,
    TicketRecord,
    TicketSeat,
)
from railbook.services.booking.trips import forget_passenger_trips
from railbook.services.booking.view_cache import forget_order_views
from railbook.services.ports import HeldSeat
from railbook.services.sales.releases import ticket_release_id

log = structlog.get_logger(__name__)

# A ticket refunded or changed more recently than this may still be returning its seat in that process.
RETURN_RETRY_AFTER = dt.timedelta(seconds=5)


@dataclass(frozen=True, slots=True)
class RefundResult:
    ticket_id: str
    refund_fen: int
    fee_fen: int


def departure_of(ticket: TicketRecord, service_date: dt.date, stop: StopTime | None) -> dt.datetime:
    """When the ticket's train leaves its boarding stop; STOP_NOT_FOUND when that stop is unknown."""
    if stop is None:
        raise StopNotFound("The ticket's departure stop is unknown.")
    return departure_at(service_date, stop.departs, stop.day)


def require_ticket(ticket: TicketRecord | None, ticket_id: str) -> TicketRecord:
    """The member's ticket; someone else's (or no) ticket is NOT_FOUND."""
    if ticket is None:
        raise TicketNotFound("No such ticket.", details={"ticket_id": ticket_id})
    return ticket


def _refund_ref(ticket_id: str) -> str:
    return REFUND_REF_PREFIX + ticket_id


async def refund_ticket(
    container: AfterSaleContext, *, member_id: int, ticket_id: str, now: dt.datetime | None = None
) -> RefundResult:
    """Refund one paid ticket; a repeat answers with the first refund. Locks the order, then the
    ticket (the order a payment locks first, too), so a refund and a payment never deadlock."""
    now = now or utcnow()
    provider = payment_provider(container)
    async with container.refunds.transaction() as tx:
        found = require_ticket(await tx.member_ticket(member_id, ticket_id), ticket_id)
        order = require_order(await tx.lock_order(found.order_id), found.order_id)
        ticket = await tx.lock_ticket(ticket_id)
        if ticket.status == TicketStatus.REFUNDED:
            paid_back = await tx.refunded_amount(order.id, _refund_ref(ticket.id))
            if paid_back is not None:
                return RefundResult(ticket.id, paid_back, ticket.price_fen - paid_back)
        if ticket.status != TicketStatus.PAID:
            raise NotRefundable(
                f"The ticket is {ticket.status}; only a paid ticket can be refunded.",
                details={"status": ticket.status},
            )
        departs = departure_of(
            ticket, order.service_date, await tx.stop_time(ticket.daily_train_id, ticket.from_index)
        )
        quote: RefundQuote = refund_quote(ticket.price_fen, departs, now)
        await provider.refund(order_id=order.id, amount_fen=quote.refund_fen, reference=ticket.id)
        # The payment row carries our own reference, so a repeat finds it (above).
        await tx.mark_refunded(
            ticket.id,
            Charge(provider.name, _refund_ref(ticket.id), quote.refund_fen),
            fee_fen=quote.fee_fen,
            now=now,
        )
        still_paid = await tx.paid_ticket_count(order.id)
        status = PaymentStatus.PARTLY_REFUNDED if still_paid else PaymentStatus.REFUNDED
        await tx.set_payment_status(order.id, status.value, now=now)
        tx.add_event(
            "ticket.refunded",
            ticket.id,
            {
                "ticket_id": ticket.id,
                "order_id": order.id,
                "member_id": member_id,
                "refund_fen": quote.refund_fen,
                "fee_fen": quote.fee_fen,
            },
            now=now,
        )
    # The order's views and the passenger's trip are forgotten in one round trip.
    await asyncio.gather(
        forget_order_views(container, [(order.id, member_id)]),
        forget_passenger_trips(container, [(order.id, [ticket.passenger_id])]),
    )
    log.info("ticket_refunded", ticket_id=ticket_id, refund_fen=quote.refund_fen, fee_fen=quote.fee_fen)
    seat = TicketSeat(
        ticket_id=ticket.id,
        status=TicketStatus.REFUNDED.value,
        train_code=order.train_code,
        service_date=order.service_date,
        from_index=ticket.from_index,
        to_index=ticket.to_index,
        seat_class=ticket.seat_class,
        seat_index=ticket.seat_index,
    )
    await return_seats_of_tickets(container, [ticket_id], seats=[seat])
    return RefundResult(ticket_id, quote.refund_fen, quote.fee_fen)


def release_id_of_ticket(seat: TicketSeat) -> str:
    """The same id a rebuild of the day marks done when its snapshot already shows the seat free."""
    return ticket_release_id(seat.ticket_id, seat.status)


async def return_seats_of_tickets(
    container: AfterSaleContext, ticket_ids: list[str], *, seats: Sequence[TicketSeat] | None = None
) -> int:
    """Give the seats of refunded or changed tickets back to the allocator, each for its own journey,
    and stamp ``released_at``; a failure is left for the expiry job to retry. ``seats``: those of the
    tickets, when the refunding transaction has just written them (else they are read)."""
    if not ticket_ids:
        return 0
    if seats is None:
        seats = await container.refunds.seats_to_return(ticket_ids)
    done: list[str] = []
    days: set[tuple[str, dt.date]] = set()
    for seat in seats:
        try:
            await container.allocator.release(
                seat.train_code,
                seat.service_date,
                seat.from_index,
                seat.to_index,
                [HeldSeat(seat.seat_class, seat.seat_index)],
                release_id=release_id_of_ticket(seat),
            )
        except Exception as exc:
            log.warning("release_failed", ticket_id=seat.ticket_id, error=repr(exc)[:200])
            continue
        done.append(seat.ticket_id)
        days.add((seat.train_code, seat.service_date))
    if done:
        await container.refunds.stamp_tickets_returned(done, utcnow())
    await container.search_changes.train_days_changed(days)
    await serve_waitlists(container, days)
    return len(done)


async def retry_ticket_seat_returns(
    container: AfterSaleContext, *, now: dt.datetime | None = None, limit: int = 100
) -> int:
    """Return again the seats of refunded or changed tickets whose return was never confirmed."""
    now = now or utcnow()
    ids = await container.refunds.unreturned_tickets(now - RETURN_RETRY_AFTER, limit)
    return await return_seats_of_tickets(container, ids)


__all__ = [
    "RefundResult",
    "departure_of",
    "refund_ticket",
    "require_ticket",
    "retry_ticket_seat_returns",
    "return_seats_of_tickets",
]
