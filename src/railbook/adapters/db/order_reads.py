"""Committed orders and tickets read back for their member (the order read model's queries)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from railbook.adapters.db.models import Order, Ticket
from railbook.kit.clock import as_utc
from railbook.services.booking.ports import OrderView, TicketView


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
        created_at=as_utc(order.created_at),
        error=error,
        payment_status=order.payment_status,
        queue_position=0,
        pay_deadline=as_utc(order.pay_deadline) if order.pay_deadline else None,
        total_fen=order.total_fen,
        tickets=tuple(_ticket_view(t) for t in sorted(tickets, key=_position_in(order))),
    )


async def _views(session: AsyncSession, orders: Sequence[Order]) -> list[OrderView]:
    """The views of these orders, their tickets read in one statement."""
    tickets = (
        (await session.execute(select(Ticket).where(Ticket.order_id.in_([o.id for o in orders]))))
        .scalars()
        .all()
        if orders
        else []
    )
    by_order: dict[str, list[Ticket]] = {}
    for t in tickets:
        by_order.setdefault(t.order_id, []).append(t)
    return [view_of(o, by_order.get(o.id, [])) for o in orders]


class DbOrderReads:
    """The ``OrderReads`` of the system of record."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self.sessionmaker = sessionmaker

    async def committed(self, member_id: int, order_ids: Sequence[str]) -> dict[str, OrderView]:
        if not order_ids:
            return {}
        async with self.sessionmaker() as session:
            orders = (
                (
                    await session.execute(
                        select(Order).where(Order.id.in_(list(order_ids)), Order.member_id == member_id)
                    )
                )
                .scalars()
                .all()
            )
            if not orders:
                return {}
            return {v.order_id: v for v in await _views(session, orders)}

    async def page(
        self, member_id: int, limit: int, before: tuple[dt.datetime, str] | None
    ) -> tuple[list[OrderView], bool]:
        stmt = select(Order).where(Order.member_id == member_id)
        if before is not None:
            created, last_id = before
            stmt = stmt.where(
                or_(Order.created_at < created, and_(Order.created_at == created, Order.id < last_id))
            )
        stmt = stmt.order_by(Order.created_at.desc(), Order.id.desc()).limit(limit + 1)
        async with self.sessionmaker() as session:
            orders = list((await session.execute(stmt)).scalars().all())
            more = len(orders) > limit
            return await _views(session, orders[:limit]), more

    async def known(self, order_ids: Sequence[str]) -> set[str]:
        async with self.sessionmaker() as session:
            found = await session.execute(select(Order.id).where(Order.id.in_(list(order_ids))))
            return set(found.scalars().all())

    async def tickets(self, member_id: int, limit: int) -> list[TicketView]:
        async with self.sessionmaker() as session:
            rows = (
                await session.execute(
                    select(Ticket, Order)
                    .join(Order, Order.id == Ticket.order_id)
                    .where(Ticket.member_id == member_id)
                    .order_by(Ticket.created_at.desc(), Ticket.id)
                    .limit(limit)
                )
            ).all()
        return [_ticket_view(t, o) for t, o in rows]
