"""Committed orders and tickets read back for their member (the order read model's queries).

Core statements on the engine's connections, rows straight into the views: no session and no ORM
object per row (a page of twenty orders used to build a hundred mapped objects to throw away).

Orders and tickets are shown under the passenger's boarding date (API.md: a train that leaves its
origin on D−1 and reaches ``from`` after midnight is shown under D), not the stored service date:
the boarding stop's row of ``daily_train_stop`` (unique on train-day and stop index) is joined in
the same statement, and its departure day added to the service date.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, literal, or_, select
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from railbook.adapters.db.by_day import rows_by_order_id
from railbook.adapters.db.models import DailyTrainStop, Order, Payment, Ticket, TicketChange
from railbook.domain.timetable import boarding_date, departure_day
from railbook.kit.clock import as_utc
from railbook.services.after_sale.ports import CHANGE_REFUND_REF_PREFIX, REFUND_REF_PREFIX
from railbook.services.booking.ports import OrderView, TicketView

_order = Order.__table__.c
_ticket = Ticket.__table__.c
_stop = DailyTrainStop.__table__.c
_payment = Payment.__table__.c
_change = TicketChange.__table__.c
# The boarding stop's times, beside an order's or a ticket's columns (NULL when the stop is gone).
BOARDING_COLUMNS = (_stop.departs, _stop.arrives, _stop.day)

ORDER_COLUMNS = (
    _order.id,
    _order.status,
    _order.train_code,
    _order.service_date,
    _order.from_station,
    _order.to_station,
    _order.created_at,
    _order.error_code,
    _order.error_message,
    _order.payment_status,
    _order.pay_deadline,
    _order.total_fen,
    _order.request,
    *BOARDING_COLUMNS,
    _change.ticket_id.label("change_of"),
)
# An order with its boarding stop and, when it came from a change, the change (unique by new order).
_ORDERS_BOARDING = Order.__table__.outerjoin(
    DailyTrainStop.__table__,
    and_(_stop.daily_train_id == _order.daily_train_id, _stop.stop_index == _order.from_index),
).outerjoin(TicketChange.__table__, _change.new_order_id == _order.id)
# A ticket's refund: the refund row of its order under the ticket's own reference (a plain refund's,
# or that of a change's refunded difference; at most one of them, a changed ticket is not refundable).
_TICKET_REFUND = and_(
    _payment.order_id == _ticket.order_id,
    _payment.kind == "refund",
    or_(
        _payment.provider_ref == literal(REFUND_REF_PREFIX) + _ticket.id,
        _payment.provider_ref == literal(CHANGE_REFUND_REF_PREFIX) + _ticket.id,
    ),
)
TICKET_COLUMNS = (
    _ticket.id,
    _ticket.order_id,
    _ticket.passenger_id,
    _ticket.passenger_name,
    _ticket.seat_name,
    _ticket.seat_class,
    _ticket.price_fen,
    _ticket.status,
    _ticket.fare_type,
    _payment.amount_fen.label("refund_fen"),
    _payment.fee_fen,
    _payment.provider_ref,
)
_TICKETS_REFUNDS = Ticket.__table__.outerjoin(Payment.__table__, _TICKET_REFUND)


def _boarding(service_date: dt.date, departs: str | None, arrives: str | None, day: int | None) -> dt.date:
    """The day the passenger boards: the service date plus the days until the train leaves the
    boarding stop (the service date itself when the stop's times are unknown)."""
    if departs is None:
        return service_date
    return boarding_date(service_date, departure_day(departs, arrives, day or 0))


def _rank(request: Any) -> dict[int, int]:
    """Position of each passenger as asked: tickets are listed in that order."""
    asked: Any = request.get("passengers", []) if isinstance(request, dict) else []
    return {int(p["passenger_id"]): i for i, p in enumerate(asked) if isinstance(p, dict)}


def _fee(t: Row[Any]) -> int | None:
    """The fee kept from a ticket's refund; for a plain refund recorded without it, what the fare
    lacks of the amount paid back."""
    if t.refund_fen is None or t.fee_fen is not None:
        return t.fee_fen  # type: ignore[no-any-return]
    if str(t.provider_ref).startswith(REFUND_REF_PREFIX):
        return int(t.price_fen) - int(t.refund_fen)
    return None


def _ticket_view(t: Row[Any]) -> TicketView:
    return TicketView(
        t[0],
        t[1],
        t[2],
        t[3],
        t[4],
        t[5],
        t[6],
        t[7],
        fare_type=t[8],
        refund_fen=t.refund_fen,
        fee_fen=_fee(t),
    )


def _member_ticket(t: Row[Any]) -> TicketView:
    """A ticket row with its order's journey (``TICKET_COLUMNS``, then train, service date, from, to,
    then the boarding stop's times)."""
    date = _boarding(t.service_date, t.departs, t.arrives, t.day)
    return TicketView(
        t.id,
        t.order_id,
        t.passenger_id,
        t.passenger_name,
        t.seat_name,
        t.seat_class,
        t.price_fen,
        t.status,
        t.train_code,
        date,
        t.from_station,
        t.to_station,
        t.fare_type,
        t.refund_fen,
        _fee(t),
    )


def _view(o: Row[Any], tickets: Sequence[Row[Any]]) -> OrderView:
    """The API view of a committed order (its row and its tickets' rows)."""
    rank = _rank(o.request)
    ordered = sorted(tickets, key=lambda t: (rank.get(t.passenger_id, len(rank)), t.id))
    return OrderView(
        order_id=o.id,
        status=o.status,
        train_code=o.train_code,
        date=_boarding(o.service_date, o.departs, o.arrives, o.day),
        from_station=o.from_station,
        to_station=o.to_station,
        created_at=as_utc(o.created_at),
        error={"code": o.error_code, "message": o.error_message or ""} if o.error_code else None,
        payment_status=o.payment_status,
        queue_position=0,
        pay_deadline=as_utc(o.pay_deadline) if o.pay_deadline else None,
        total_fen=o.total_fen,
        tickets=tuple(_ticket_view(t) for t in ordered),
        change_of=o.change_of,
    )


async def _views(conn: AsyncConnection, orders: Sequence[Row[Any]]) -> list[OrderView]:
    """The views of these orders, their tickets read in one statement."""
    if not orders:
        return []
    rows = (
        await conn.execute(
            select(*TICKET_COLUMNS)
            .select_from(_TICKETS_REFUNDS)
            .where(
                _ticket.order_id.in_([o.id for o in orders]),
                _ticket.service_date.in_(sorted({o.service_date for o in orders})),
            )
        )
    ).all()
    by_order: dict[str, list[Row[Any]]] = {}
    for t in rows:
        by_order.setdefault(t.order_id, []).append(t)
    return [_view(o, by_order.get(o.id, [])) for o in orders]


class DbOrderReads:
    """The ``OrderReads`` of the system of record."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def committed(self, member_id: int, order_ids: Sequence[str]) -> dict[str, OrderView]:
        if not order_ids:
            return {}
        stmt = (
            select(*ORDER_COLUMNS)
            .select_from(_ORDERS_BOARDING)
            .where(_order.id.in_(list(order_ids)), _order.member_id == member_id)
        )
        async with self.engine.connect() as conn:
            if len(order_ids) == 1:  # a passenger's poll: read from the order's date's partition
                orders = await rows_by_order_id(conn, stmt, _order.service_date, order_ids[0])
            else:
                orders = (await conn.execute(stmt)).all()
            return {v.order_id: v for v in await _views(conn, orders)}

    async def page(
        self, member_id: int, limit: int, before: tuple[dt.datetime, str] | None
    ) -> tuple[list[OrderView], bool]:
        stmt = select(*ORDER_COLUMNS).select_from(_ORDERS_BOARDING).where(_order.member_id == member_id)
        if before is not None:
            created, last_id = before
            stmt = stmt.where(
                or_(_order.created_at < created, and_(_order.created_at == created, _order.id < last_id))
            )
        stmt = stmt.order_by(_order.created_at.desc(), _order.id.desc()).limit(limit + 1)
        async with self.engine.connect() as conn:
            orders = (await conn.execute(stmt)).all()
            more = len(orders) > limit
            return await _views(conn, orders[:limit]), more

    async def known(self, order_ids: Sequence[str]) -> set[str]:
        async with self.engine.connect() as conn:
            found = await conn.execute(select(_order.id).where(_order.id.in_(list(order_ids))))
            return set(found.scalars().all())

    async def tickets(self, member_id: int, limit: int) -> list[TicketView]:
        stmt = (
            select(
                *TICKET_COLUMNS,
                _order.train_code,
                _order.service_date,
                _order.from_station,
                _order.to_station,
                *BOARDING_COLUMNS,
            )
            .select_from(_TICKETS_REFUNDS)
            .join(Order.__table__, _order.id == _ticket.order_id)
            .outerjoin(
                DailyTrainStop.__table__,
                and_(_stop.daily_train_id == _ticket.daily_train_id, _stop.stop_index == _ticket.from_index),
            )
            .where(_ticket.member_id == member_id)
            .order_by(_ticket.created_at.desc(), _ticket.id)
            .limit(limit)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return [_member_ticket(row) for row in rows]
