"""The read model's cache: compact views of committed orders and of a member's lists, and the one
step every change of an order takes after its commit (``forget_order_views``).

Invariant: once a change of an order has returned to its caller (a client's answer, the committer's
acknowledgement), no read shows the order as it was before the change. Every writer commits, then
calls ``forget_order_views`` before it answers; that moves the generation of the order and of its
member on, then drops their cached entries (in that order). A reader reads the generation *before*
it reads the database and fills the cache only if the generation has not moved since (one atomic
step in the cache). So a reader that read the database before a commit either filled before the
generation moved (and its entry is dropped right after) or is refused; an entry that survives was
read from the database after the change. Entries also expire after ``ports.VIEW_TTL_SECONDS``, which bounds
how long a change whose ``forget_order_views`` failed (the cache store down) can stay unseen.

A second use of the generations: the committer moves an order's generation on after it writes the
order, so a generation of 0 means the order had not been committed when it was read; a pending
record found after that is the order's state, without asking the database.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import Any, Protocol

from railbook.domain.order_state import OrderStatus, PaymentStatus, TicketStatus
from railbook.kit.clock import as_utc
from railbook.services.booking.ports import OrderMessage, OrderView, OrderViewCache, TicketView, ticket_id


class ViewCacheContext(Protocol):
    """The part of the composition root that the invalidation needs."""

    @property
    def order_views(self) -> OrderViewCache: ...


async def forget_order_views(container: ViewCacheContext, orders: Sequence[tuple[str, int]]) -> None:
    """A change of these (order id, member id) committed: no read may show them as before (call it
    after the commit, before answering). Raises when the cache cannot be told (the caller's answer
    then says the store is unavailable; entries still expire after ``ports.VIEW_TTL_SECONDS``)."""
    if not orders:
        return
    await container.order_views.forget(sorted({o for o, _ in orders}), sorted({m for _, m in orders}))


async def publish_written_views(
    container: ViewCacheContext, written: Sequence[OrderMessage], pay_deadline_seconds: int
) -> None:
    """The committer wrote these orders (SUCCESS, unpaid) just now: their views as written are kept
    for their members' next reads (see ``OrderViewCache.written``), their members' lists forgotten.
    Raises as ``forget_order_views`` does."""
    if not written:
        return
    views = [(m.order_id, encode_order(m.member_id, written_view(m, pay_deadline_seconds))) for m in written]
    await container.order_views.written(views, sorted({m.member_id for m in written}))


def written_view(m: OrderMessage, pay_deadline_seconds: int) -> OrderView:
    """The view of an order as the committer writes it (what the database's read of it answers, see
    ``adapters.db.order_reads``): held and unpaid, the pay deadline counted from its acceptance, its
    tickets in the order the passengers were asked for."""
    tickets = []
    for seat in m.seats:  # sorted by position, as the passengers were asked for
        position = int(seat["position"])
        passenger = m.passengers[position]
        tickets.append(
            TicketView(
                ticket_id(m.order_id, position),
                m.order_id,
                int(passenger["passenger_id"]),
                str(passenger.get("name", "")),
                str(seat["seat_name"]),
                str(seat["seat_class"]),
                int(passenger.get("price_fen", 0)),
                TicketStatus.UNPAID.value,
                fare_type=str(passenger.get("fare_type") or "adult"),
            )
        )
    return OrderView(
        order_id=m.order_id,
        status=OrderStatus.SUCCESS.value,
        train_code=m.train_code,
        date=m.boarding or m.date,
        from_station=m.from_station,
        to_station=m.to_station,
        created_at=as_utc(m.created_at),
        payment_status=PaymentStatus.UNPAID.value,
        pay_deadline=as_utc(m.created_at) + dt.timedelta(seconds=pay_deadline_seconds),
        total_fen=m.total_fen,
        tickets=tuple(tickets),
        change_of=m.change_of,
    )


def _date(value: dt.date | None) -> str | None:
    return value.isoformat() if value is not None else None


def _ticket_fields(t: TicketView) -> list[Any]:
    return [
        t.ticket_id,
        t.order_id,
        t.passenger_id,
        t.passenger_name,
        t.seat,
        t.seat_class,
        t.price_fen,
        t.status,
        t.train_code,
        _date(t.date),
        t.from_station,
        t.to_station,
        t.fare_type,
        t.refund_fen,
        t.fee_fen,
    ]


def _ticket_of(f: list[Any]) -> TicketView:
    return TicketView(
        f[0],
        f[1],
        f[2],
        f[3],
        f[4],
        f[5],
        f[6],
        f[7],
        f[8],
        dt.date.fromisoformat(f[9]) if f[9] else None,
        f[10],
        f[11],
        f[12] if len(f) > 12 else "adult",
        f[13] if len(f) > 13 else None,
        f[14] if len(f) > 14 else None,
    )


def _view_fields(v: OrderView) -> list[Any]:
    return [
        v.order_id,
        v.status,
        v.train_code,
        _date(v.date),
        v.from_station,
        v.to_station,
        v.created_at.isoformat(),
        v.error,
        v.payment_status,
        v.queue_position,
        v.pay_deadline.isoformat() if v.pay_deadline is not None else None,
        v.total_fen,
        [_ticket_fields(t) for t in v.tickets],
        v.change_of,
    ]


def _view_of(f: list[Any]) -> OrderView:
    return OrderView(
        order_id=f[0],
        status=f[1],
        train_code=f[2],
        date=dt.date.fromisoformat(f[3]) if f[3] else None,
        from_station=f[4],
        to_station=f[5],
        created_at=dt.datetime.fromisoformat(f[6]),
        error=f[7],
        payment_status=f[8],
        queue_position=f[9],
        pay_deadline=dt.datetime.fromisoformat(f[10]) if f[10] else None,
        total_fen=f[11],
        tickets=tuple(_ticket_of(t) for t in f[12]),
        change_of=f[13] if len(f) > 13 else None,
    )


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def encode_order(member_id: int, view: OrderView) -> str:
    """The compact cached form of a committed order's view (its member with it)."""
    return _dumps([member_id, _view_fields(view)])


def decode_order(raw: str) -> tuple[int, OrderView]:
    """(member id, view) of ``encode_order``'s text."""
    member_id, fields = json.loads(raw)
    return int(member_id), _view_of(fields)


def encode_page(views: Sequence[OrderView], more: bool) -> str:
    """The compact cached form of a page of committed orders."""
    return _dumps([more, [_view_fields(v) for v in views]])


def decode_page(raw: str) -> tuple[list[OrderView], bool]:
    """(views, more) of ``encode_page``'s text."""
    more, views = json.loads(raw)
    return [_view_of(v) for v in views], bool(more)


def encode_tickets(tickets: Sequence[TicketView]) -> str:
    """The compact cached form of a member's ticket list."""
    return _dumps([_ticket_fields(t) for t in tickets])


def decode_tickets(raw: str) -> list[TicketView]:
    """The tickets of ``encode_tickets``'s text."""
    return [_ticket_of(t) for t in json.loads(raw)]
