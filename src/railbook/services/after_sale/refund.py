"""Refunding and changing paid tickets.

A refund moves one ``PAID`` ticket to ``REFUNDED``, pays back the fare less the fee the 12306
rules charge for the time left before departure, and gives that seat back for that journey only
(release id ``refund:<ticket id>``). A change places a new order for the same passenger and
stations on another train or date; the old ticket becomes ``CHANGED`` only once the new order
holds its seats (``SUCCESS``), and the new order is then settled with the old fare (the difference
charged or refunded through the provider). Until then the old ticket stays valid.

Seats go back after the commit; ``ticket.released_at`` records it, and the expiry job releases
again any refunded or changed ticket without it (releases are idempotent per release id).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import structlog
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from railbook.adapters.db.models import DailyTrainStop, Order, Outbox, Payment, Ticket, TicketChange
from railbook.domain.errors import (
    ChangeAfterDeparture,
    ChangeInProgress,
    NotChangeable,
    NotRefundable,
    StopNotFound,
    TicketNotFound,
)
from railbook.domain.fees import RefundQuote, departure_at, refund_quote
from railbook.domain.order_state import OrderStatus, PaymentStatus, TicketStatus
from railbook.kit.clock import utcnow
from railbook.services.after_sale.cancel import after_release, cancel_rows, release_orders
from railbook.services.after_sale.payment import (
    SUCCEEDED,
    AfterSaleContext,
    lock_order,
    payment_provider,
)
from railbook.services.booking.accept import (
    Accepted,
    OrderRequest,
    PassengerChoice,
    forget_order_markers,
    place_order,
)
from railbook.services.ports import HeldSeat
from railbook.services.sales.service import ticket_release_id

log = structlog.get_logger(__name__)

RERELEASE_AFTER = dt.timedelta(seconds=5)
# A change whose new order never reached the database (the accept was lost) is given up after this.
CHANGE_ORPHAN_AFTER = dt.timedelta(minutes=30)
CHANGE_PROVIDER = "change"


@dataclass(frozen=True, slots=True)
class RefundResult:
    ticket_id: str
    refund_fen: int
    fee_fen: int


async def _ticket_departure(session: AsyncSession, ticket: Ticket, service_date: dt.date) -> dt.datetime:
    row = (
        await session.execute(
            select(DailyTrainStop.departs, DailyTrainStop.day).where(
                DailyTrainStop.daily_train_id == ticket.daily_train_id,
                DailyTrainStop.stop_index == ticket.from_index,
            )
        )
    ).first()
    if row is None or row[0] is None:
        raise StopNotFound("The ticket's departure stop is unknown.")
    return departure_at(service_date, row[0], int(row[1] or 0))


async def _member_ticket(session: AsyncSession, member_id: int, ticket_id: str) -> Ticket:
    ticket = (
        await session.execute(select(Ticket).where(Ticket.id == ticket_id, Ticket.member_id == member_id))
    ).scalar_one_or_none()
    if ticket is None:
        raise TicketNotFound("No such ticket.", details={"ticket_id": ticket_id})
    return ticket


async def _lock_ticket(session: AsyncSession, ticket_id: str) -> Ticket:
    ticket = (
        await session.execute(
            select(Ticket)
            .where(Ticket.id == ticket_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).scalar_one()
    return ticket


async def _refund_payment_status(session: AsyncSession, order_id: str) -> str:
    still_paid = (
        await session.execute(
            select(func.count())
            .select_from(Ticket)
            .where(Ticket.order_id == order_id, Ticket.status == TicketStatus.PAID.value)
        )
    ).scalar_one()
    return (PaymentStatus.PARTLY_REFUNDED if still_paid else PaymentStatus.REFUNDED).value


async def refund_ticket(
    container: AfterSaleContext, *, member_id: int, ticket_id: str, now: dt.datetime | None = None
) -> RefundResult:
    """Refund one paid ticket; a repeat answers with the first refund. Locks the order, then the
    ticket (the order a payment locks first, too), so a refund and a payment never deadlock."""
    now = now or utcnow()
    provider = payment_provider(container)
    async with container.sessionmaker() as session, session.begin():
        found = await _member_ticket(session, member_id, ticket_id)
        order = await lock_order(session, found.order_id)
        ticket = await _lock_ticket(session, ticket_id)
        if ticket.status == TicketStatus.REFUNDED:
            paid_back = (
                await session.execute(
                    select(Payment.amount_fen).where(
                        Payment.order_id == order.id,
                        Payment.kind == "refund",
                        Payment.provider_ref == _refund_ref(ticket.id),
                    )
                )
            ).scalar_one_or_none()
            if paid_back is not None:
                return RefundResult(ticket.id, paid_back, ticket.price_fen - paid_back)
        if ticket.status != TicketStatus.PAID:
            raise NotRefundable(
                f"The ticket is {ticket.status}; only a paid ticket can be refunded.",
                details={"status": ticket.status},
            )
        quote: RefundQuote = refund_quote(
            ticket.price_fen, await _ticket_departure(session, ticket, order.service_date), now
        )
        await provider.refund(order_id=order.id, amount_fen=quote.refund_fen, reference=ticket.id)
        ticket.status = TicketStatus.REFUNDED.value
        ticket.updated_at = now
        ticket.released_at = None
        session.add(
            Payment(
                order_id=order.id,
                provider=provider.name,
                provider_ref=_refund_ref(ticket.id),
                kind="refund",
                amount_fen=quote.refund_fen,
                status=SUCCEEDED,
                created_at=now,
            )
        )
        await session.flush()
        order.payment_status = await _refund_payment_status(session, order.id)
        order.updated_at = now
        session.add(
            Outbox(
                topic="ticket.refunded",
                key=ticket.id,
                created_at=now,
                payload={
                    "ticket_id": ticket.id,
                    "order_id": order.id,
                    "member_id": member_id,
                    "refund_fen": quote.refund_fen,
                    "fee_fen": quote.fee_fen,
                },
            )
        )
    log.info("ticket_refunded", ticket_id=ticket_id, refund_fen=quote.refund_fen, fee_fen=quote.fee_fen)
    await release_tickets(container, [ticket_id])
    return RefundResult(ticket_id, quote.refund_fen, quote.fee_fen)


def _refund_ref(ticket_id: str) -> str:
    return f"refund-{ticket_id}"


def release_id_of_ticket(ticket: Ticket) -> str:
    """The same id a rebuild of the day marks done when its snapshot already shows the seat free."""
    return ticket_release_id(ticket.id, ticket.status)


async def release_tickets(container: AfterSaleContext, ticket_ids: list[str]) -> int:
    """Give the seats of refunded or changed tickets back, each for its own journey, and stamp
    ``released_at``; a failure is left for the expiry job to retry."""
    if not ticket_ids:
        return 0
    async with container.sessionmaker() as session:
        rows = (
            await session.execute(
                select(Ticket, Order.train_code, Order.service_date)
                .join(Order, Order.id == Ticket.order_id)
                .where(
                    Ticket.id.in_(ticket_ids),
                    Ticket.status.in_([TicketStatus.REFUNDED.value, TicketStatus.CHANGED.value]),
                )
            )
        ).all()
    done: list[str] = []
    days: set[tuple[str, dt.date]] = set()
    for ticket, train_code, service_date in rows:
        try:
            await container.allocator.release(
                train_code,
                service_date,
                ticket.from_index,
                ticket.to_index,
                [HeldSeat(ticket.seat_class, ticket.seat_index)],
                release_id=release_id_of_ticket(ticket),
            )
        except Exception as exc:
            log.warning("release_failed", ticket_id=ticket.id, error=repr(exc)[:200])
            continue
        done.append(ticket.id)
        days.add((train_code, service_date))
    if done:
        async with container.sessionmaker() as session, session.begin():
            await session.execute(update(Ticket).where(Ticket.id.in_(done)).values(released_at=utcnow()))
    await after_release(container, days)
    return len(done)


async def rerelease_tickets(
    container: AfterSaleContext, *, now: dt.datetime | None = None, limit: int = 100
) -> int:
    """Release again the refunded or changed tickets whose release was never confirmed."""
    now = now or utcnow()
    async with container.sessionmaker() as session:
        ids = list(
            (
                await session.execute(
                    select(Ticket.id)
                    .where(
                        Ticket.status.in_([TicketStatus.REFUNDED.value, TicketStatus.CHANGED.value]),
                        Ticket.released_at.is_(None),
                        Ticket.updated_at <= now - RERELEASE_AFTER,
                    )
                    .order_by(Ticket.updated_at)
                    .limit(limit)
                )
            ).scalars()
        )
    return await release_tickets(container, ids)


# --------------------------------------------------------------------------------------------
# Changing a ticket.


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
    async with container.sessionmaker() as session:
        ticket = await _member_ticket(session, member_id, ticket_id)
        if ticket.status != TicketStatus.PAID:
            raise NotChangeable(
                f"The ticket is {ticket.status}; only a paid ticket can be changed.",
                details={"status": ticket.status},
            )
        order = (await session.execute(select(Order).where(Order.id == ticket.order_id))).scalar_one()
        if await _ticket_departure(session, ticket, order.service_date) <= now:
            raise ChangeAfterDeparture("The train has already left; the ticket cannot be changed.")
        busy = (
            await session.execute(
                select(TicketChange.id).where(
                    TicketChange.ticket_id == ticket_id, TicketChange.status == "PENDING"
                )
            )
        ).first()
        if busy is not None:
            raise ChangeInProgress("A change of this ticket is already in progress.")
        from_station, to_station, passenger_id = order.from_station, order.to_station, ticket.passenger_id
    request = OrderRequest(
        date=date,
        train_code=train_code,
        from_station=from_station,
        to_station=to_station,
        passengers=(PassengerChoice(passenger_id, seat_class),),
    )
    accepted = await place_order(container, member_id=member_id, request=request, client_ip=client_ip)
    async with container.sessionmaker() as session, session.begin():
        session.add(
            TicketChange(
                ticket_id=ticket_id,
                member_id=member_id,
                new_order_id=accepted.order_id,
                status="PENDING",
                created_at=now,
                updated_at=now,
            )
        )
    log.info("ticket_change_requested", ticket_id=ticket_id, new_order_id=accepted.order_id)
    return accepted


async def apply_changes(
    container: AfterSaleContext, *, now: dt.datetime | None = None, limit: int = 100
) -> int:
    """Complete pending changes whose new order has an answer: SUCCESS makes the old ticket CHANGED
    (its seat released) and settles the new order with the old fare; a refused new order abandons
    the change. Each change is decided in its own transaction, its row locked (SKIP LOCKED), so two
    workers never apply one change twice."""
    now = now or utcnow()
    async with container.sessionmaker() as session:
        ids = list(
            (
                await session.execute(
                    select(TicketChange.id)
                    .where(TicketChange.status == "PENDING")
                    .order_by(TicketChange.id)
                    .limit(limit)
                )
            ).scalars()
        )
    applied = 0
    for change_id in ids:
        outcome = await _apply_change(container, change_id, now)
        if outcome is None:
            continue
        kind, target = outcome
        if kind == "changed":
            applied += 1
            await release_tickets(container, [target])
            # The new order was paid with the old fare: its markers go as a payment's do.
            async with container.sessionmaker() as session:
                new_order = await session.scalar(
                    select(TicketChange.new_order_id).where(TicketChange.id == change_id)
                )
            if new_order:
                await forget_order_markers(container, [new_order])
        elif kind == "cancelled":
            await release_orders(container, [target])
    return applied


async def _apply_change(
    container: AfterSaleContext, change_id: int, now: dt.datetime
) -> tuple[str, str] | None:
    provider = payment_provider(container)
    async with container.sessionmaker() as session, session.begin():
        change = (
            await session.execute(
                select(TicketChange)
                .where(TicketChange.id == change_id, TicketChange.status == "PENDING")
                .with_for_update(skip_locked=True)
            )
        ).scalar_one_or_none()
        if change is None:
            return None
        new = (
            await session.execute(select(Order).where(Order.id == change.new_order_id).with_for_update())
        ).scalar_one_or_none()
        if new is None or new.status in (OrderStatus.INIT, OrderStatus.PENDING):
            created = (
                change.created_at if change.created_at.tzinfo else change.created_at.replace(tzinfo=dt.UTC)
            )
            if new is None and created < now - CHANGE_ORPHAN_AFTER:
                change.status, change.updated_at = "ABANDONED", now
            return None
        if new.status != OrderStatus.SUCCESS:
            change.status, change.updated_at = "ABANDONED", now
            return None
        old_order = await lock_order(
            session,
            (
                await session.execute(select(Ticket.order_id).where(Ticket.id == change.ticket_id))
            ).scalar_one(),
        )
        old = await _lock_ticket(session, change.ticket_id)
        if old.status != TicketStatus.PAID or new.payment_status != PaymentStatus.UNPAID:
            # The old ticket was refunded or changed meanwhile (or the new order was paid some other
            # way): the new order must not stand on the old fare.
            change.status, change.updated_at = "ABANDONED", now
            if new.payment_status == PaymentStatus.UNPAID:
                await cancel_rows(session, new, reason="cancelled", now=now)
                return ("cancelled", new.id)
            return None
        old.status, old.updated_at, old.released_at = TicketStatus.CHANGED.value, now, None
        covered = min(old.price_fen, new.total_fen)
        session.add(
            Payment(
                order_id=new.id,
                provider=CHANGE_PROVIDER,
                provider_ref=f"change-{old.id}",
                kind="pay",
                amount_fen=covered,
                status=SUCCEEDED,
                created_at=now,
            )
        )
        if new.total_fen > old.price_fen:
            charge = await provider.charge(
                order_id=new.id, amount_fen=new.total_fen - old.price_fen, idempotency_key=None
            )
            session.add(
                Payment(
                    order_id=new.id,
                    provider=charge.provider,
                    provider_ref=charge.provider_ref,
                    kind="pay",
                    amount_fen=charge.amount_fen,
                    status=SUCCEEDED,
                    created_at=now,
                )
            )
        elif new.total_fen < old.price_fen:
            back = await provider.refund(
                order_id=old_order.id, amount_fen=old.price_fen - new.total_fen, reference=f"chg-{old.id}"
            )
            session.add(
                Payment(
                    order_id=old_order.id,
                    provider=back.provider,
                    provider_ref=back.provider_ref,
                    kind="refund",
                    amount_fen=back.amount_fen,
                    status=SUCCEEDED,
                    created_at=now,
                )
            )
        new.payment_status, new.updated_at = PaymentStatus.PAID.value, now
        await session.execute(
            update(Ticket)
            .where(Ticket.order_id == new.id, Ticket.status == TicketStatus.UNPAID.value)
            .values(status=TicketStatus.PAID.value, updated_at=now)
        )
        change.status, change.updated_at = "DONE", now
        session.add(
            Outbox(
                topic="ticket.changed",
                key=old.id,
                created_at=now,
                payload={
                    "ticket_id": old.id,
                    "old_order_id": old_order.id,
                    "new_order_id": new.id,
                    "member_id": change.member_id,
                },
            )
        )
    log.info("ticket_changed", ticket_id=change.ticket_id, new_order_id=change.new_order_id)
    return ("changed", change.ticket_id)


__all__ = [
    "RefundResult",
    "apply_changes",
    "change_ticket",
    "refund_ticket",
    "release_tickets",
    "rerelease_tickets",
]
