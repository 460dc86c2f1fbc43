"""Reading orders and tickets back for their member: committed ones from the database, accepted but
not yet committed ones from the pending records of the accept path.

Invariant (API.md): an order once answered 202 can always be read back. The database answers for
committed orders; a pending record answers while the order is queued; an id we issued that neither
knows after ``LOST_AFTER_SECONDS`` (a total loss of Redis data) is reported ``FAILURE`` with
``LOST_IN_FAILOVER`` — never left pending for ever.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from railbook.adapters.db.models import Order, Ticket
from railbook.domain.errors import BadCursor, OrderNotFound
from railbook.domain.order_state import OrderStatus
from railbook.services.booking.accept import OrderContext, order_id_time, verify_order_id

LOST_AFTER_SECONDS = 10.0
MAX_PAGE = 100


@dataclass(frozen=True, slots=True)
class TicketView:
    ticket_id: str
    order_id: str
    passenger_id: int
    passenger_name: str
    seat: str
    seat_class: str
    price_fen: int
    status: str
    train_code: str = ""
    date: dt.date | None = None
    from_station: str = ""
    to_station: str = ""


@dataclass(frozen=True, slots=True)
class OrderView:
    order_id: str
    status: str
    train_code: str | None
    date: dt.date | None
    from_station: str | None
    to_station: str | None
    created_at: dt.datetime
    error: dict[str, str] | None = None
    payment_status: str | None = None
    queue_position: int = 0
    pay_deadline: dt.datetime | None = None
    total_fen: int = 0
    tickets: tuple[TicketView, ...] = field(default_factory=tuple)


def _utc(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def _ticket_view(t: Ticket, order: Order | None = None) -> TicketView:
    return TicketView(
        ticket_id=t.id,
        order_id=t.order_id,
        passenger_id=t.passenger_id,
        passenger_name=t.passenger_name,
        seat=t.seat_name,
        seat_class=t.seat_class,
        price_fen=t.price_fen,
        status=t.status,
        train_code=order.train_code if order else "",
        date=order.service_date if order else None,
        from_station=order.from_station if order else "",
        to_station=order.to_station if order else "",
    )


def _position_in(order: Order) -> Any:
    """Sort key: tickets in the order the passengers were asked for."""
    asked: Any = order.request.get("passengers", []) if isinstance(order.request, dict) else []
    rank = {int(p["passenger_id"]): i for i, p in enumerate(asked) if isinstance(p, dict)}
    return lambda t: (rank.get(t.passenger_id, len(rank)), t.id)


def view_of(order: Order, tickets: Sequence[Ticket]) -> OrderView:
    """The API view of a committed order."""
    error = {"code": order.error_code, "message": order.error_message or ""} if order.error_code else None
    return OrderView(
        order_id=order.id,
        status=order.status,
        train_code=order.train_code,
        date=order.service_date,
        from_station=order.from_station,
        to_station=order.to_station,
        created_at=_utc(order.created_at),
        error=error,
        payment_status=order.payment_status,
        queue_position=0,
        pay_deadline=_utc(order.pay_deadline) if order.pay_deadline else None,
        total_fen=order.total_fen,
        tickets=tuple(_ticket_view(t) for t in sorted(tickets, key=_position_in(order))),
    )


def _pending_view(record: Mapping[str, Any], position: int) -> OrderView:
    return OrderView(
        order_id=str(record["order_id"]),
        status=OrderStatus.PENDING.value,
        train_code=str(record["train_code"]),
        date=dt.date.fromisoformat(str(record["date"])),
        from_station=str(record["from_station"]),
        to_station=str(record["to_station"]),
        created_at=dt.datetime.fromisoformat(str(record["created_at"])),
        queue_position=position,
        total_fen=sum(int(p.get("price_fen", 0)) for p in record.get("passengers", [])),
    )


async def _committed(session: AsyncSession, member_id: int, ids: Sequence[str]) -> dict[str, OrderView]:
    if not ids:
        return {}
    orders = (
        (await session.execute(select(Order).where(Order.id.in_(list(ids)), Order.member_id == member_id)))
        .scalars()
        .all()
    )
    if not orders:
        return {}
    tickets = (
        (await session.execute(select(Ticket).where(Ticket.order_id.in_([o.id for o in orders]))))
        .scalars()
        .all()
    )
    by_order: dict[str, list[Ticket]] = {}
    for t in tickets:
        by_order.setdefault(t.order_id, []).append(t)
    return {o.id: view_of(o, by_order.get(o.id, [])) for o in orders}


async def get_order(container: OrderContext, *, member_id: int, order_id: str) -> OrderView:
    """One order of this member, wherever it is on its way; someone else's (or a made-up id) is 404."""
    order_id = order_id.strip().lower()
    async with container.sessionmaker() as session:
        found = await _committed(session, member_id, [order_id])
    if order_id in found:
        return found[order_id]
    if not verify_order_id(container.jwt_secret, member_id, order_id):
        raise OrderNotFound("No such order.", details={"order_id": order_id})
    guard = container.guard
    record = await guard.pending(order_id)
    if record is not None and int(record["member_id"]) == member_id:
        # Committed between our two reads? The database answers again.
        async with container.sessionmaker() as session:
            found = await _committed(session, member_id, [order_id])
        if order_id in found:
            return found[order_id]
        return _pending_view(record, await guard.queue_position(record))
    issued = order_id_time(order_id)
    if (dt.datetime.now(dt.UTC) - issued).total_seconds() < LOST_AFTER_SECONDS:
        # Accepted a moment ago: its records may still be on their way.
        return OrderView(
            order_id=order_id,
            status=OrderStatus.PENDING.value,
            train_code=None,
            date=None,
            from_station=None,
            to_station=None,
            created_at=issued,
        )
    return OrderView(
        order_id=order_id,
        status=OrderStatus.FAILURE.value,
        train_code=None,
        date=None,
        from_station=None,
        to_station=None,
        created_at=issued,
        error={
            "code": "LOST_IN_FAILOVER",
            "message": "The order was accepted but lost in a failover before it was committed; "
            "no seat is held and nothing was charged. Please order again.",
        },
    )


def _encode_cursor(created_at: dt.datetime, order_id: str) -> str:
    raw = json.dumps([_utc(created_at).isoformat(), order_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[dt.datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, order_id = json.loads(raw)
        return _utc(dt.datetime.fromisoformat(created)), str(order_id)
    except (ValueError, TypeError) as exc:
        raise BadCursor("The cursor is not valid.") from exc


async def list_orders(
    container: OrderContext, *, member_id: int, limit: int = 20, cursor: str | None = None
) -> tuple[list[OrderView], str | None]:
    """The member's orders, newest first; the first page also shows orders still in the queue."""
    limit = max(1, min(limit, MAX_PAGE))
    stmt = select(Order).where(Order.member_id == member_id)
    if cursor:
        created, last_id = _decode_cursor(cursor)
        stmt = stmt.where(
            or_(Order.created_at < created, and_(Order.created_at == created, Order.id < last_id))
        )
    stmt = stmt.order_by(Order.created_at.desc(), Order.id.desc()).limit(limit + 1)
    async with container.sessionmaker() as session:
        orders = list((await session.execute(stmt)).scalars().all())
        more = len(orders) > limit
        orders = orders[:limit]
        tickets = (
            (await session.execute(select(Ticket).where(Ticket.order_id.in_([o.id for o in orders]))))
            .scalars()
            .all()
            if orders
            else []
        )
        pending: list[Mapping[str, Any]] = []
        if not cursor:
            records = await container.guard.pending_of_member(member_id)
            if records:
                known = set(
                    (
                        await session.execute(
                            select(Order.id).where(Order.id.in_([str(r["order_id"]) for r in records]))
                        )
                    )
                    .scalars()
                    .all()
                )
                pending = [r for r in records if str(r["order_id"]) not in known]
    by_order: dict[str, list[Ticket]] = {}
    for t in tickets:
        by_order.setdefault(t.order_id, []).append(t)
    items = [_pending_view(r, 0) for r in pending] + [view_of(o, by_order.get(o.id, [])) for o in orders]
    next_cursor = _encode_cursor(orders[-1].created_at, orders[-1].id) if more and orders else None
    return items, next_cursor


async def list_tickets(container: OrderContext, *, member_id: int, limit: int = 200) -> list[TicketView]:
    """The member's tickets, newest first."""
    async with container.sessionmaker() as session:
        rows = (
            await session.execute(
                select(Ticket, Order)
                .join(Order, Order.id == Ticket.order_id)
                .where(Ticket.member_id == member_id)
                .order_by(Ticket.created_at.desc(), Ticket.id)
                .limit(max(1, min(limit, 500)))
            )
        ).all()
    return [_ticket_view(t, o) for t, o in rows]
