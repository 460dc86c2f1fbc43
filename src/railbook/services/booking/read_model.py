"""Reading orders and tickets back for their member: committed ones from the database, accepted but
not yet committed ones from the pending records of the accept path.

Invariant (API.md): an order once answered 202 can always be read back. The database answers for
committed orders; a pending record answers while the order is queued; an id we issued that neither
knows after ``LOST_AFTER_SECONDS`` (a total loss of Redis data) is reported ``FAILURE`` with
``LOST_IN_FAILOVER`` — never left pending for ever.

Cost: committed orders and the member's lists are served from the view cache (``booking.view_cache``:
no stale status once a change has answered); a queued order is answered from its pending record
without asking the database while its generation says it was not committed (see there), up to
``PENDING_TRUSTED_SECONDS`` after it was accepted (then the database is asked as well, should a
committer have stopped between its commit and its invalidation).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import structlog

from railbook.domain.errors import BadCursor, OrderNotFound
from railbook.domain.order_state import OrderStatus, PaymentStatus, TicketStatus
from railbook.kit.clock import as_utc
from railbook.services.booking.context import OrderContext
from railbook.services.booking.order_ids import order_id_time, verify_order_id
from railbook.services.booking.ports import OrderView, TicketView, owed_fen
from railbook.services.booking.trip_ports import traveller_keys_of
from railbook.services.booking.trips import forget_trips
from railbook.services.booking.view_cache import (
    decode_order,
    decode_page,
    decode_tickets,
    encode_order,
    encode_page,
    encode_tickets,
)

__all__ = [
    "OrderView",
    "TicketView",
    "cached_order",
    "get_order",
    "list_orders",
    "list_tickets",
    "order_after",
]

log = structlog.get_logger(__name__)

LOST_AFTER_SECONDS = 10.0  # below PENDING_TRUSTED_SECONDS: an order given up reads lost at once
# An order is queued in the same breath as it is admitted (milliseconds): one not in its train-day's
# stream this long after its acceptance, once the committers have drained that far, never will be.
QUEUED_WITHIN_SECONDS = 10.0
PENDING_TRUSTED_SECONDS = 30.0
MAX_PAGE = 100


def _pending_view(record: Mapping[str, Any], position: int) -> OrderView:
    return OrderView(
        order_id=str(record["order_id"]),
        status=OrderStatus.PENDING.value,
        train_code=str(record["train_code"]),
        date=dt.date.fromisoformat(str(record.get("boarding") or record["date"])),
        from_station=str(record["from_station"]),
        to_station=str(record["to_station"]),
        created_at=dt.datetime.fromisoformat(str(record["created_at"])),
        queue_position=position,
        total_fen=owed_fen(
            sum(int(p.get("price_fen", 0)) for p in record.get("passengers", [])),
            int(record.get("credit_fen") or 0),
        ),
        change_of=str(record["change_of"]) if record.get("change_of") else None,
    )


def _recent(record: Mapping[str, Any]) -> bool:
    """Whether the order was accepted less than ``PENDING_TRUSTED_SECONDS`` ago."""
    created = as_utc(dt.datetime.fromisoformat(str(record["created_at"])))
    return (dt.datetime.now(dt.UTC) - created).total_seconds() < PENDING_TRUSTED_SECONDS


async def get_order(container: OrderContext, *, member_id: int, order_id: str) -> OrderView:
    """One order of this member, wherever it is on its way; someone else's (or a made-up id) is 404."""
    order_id = order_id.strip().lower()
    cached, generation = await container.order_views.order(order_id)
    if cached is not None:
        owner, view = decode_order(cached)
        if owner == member_id:
            return view
    guard = container.guard
    if generation == 0 and verify_order_id(container.jwt_secret, member_id, order_id):
        # Not committed when the generation was read (the committer moves it on after its commit).
        record = await guard.pending(order_id)
        if record is not None and int(record["member_id"]) == member_id and _recent(record):
            return _pending_view(record, await guard.queue_position(record))
    found = await container.order_reads.committed(member_id, [order_id])
    if order_id in found:
        if generation is not None:
            await container.order_views.keep_order(
                order_id, generation, encode_order(member_id, found[order_id])
            )
        return found[order_id]
    if not verify_order_id(container.jwt_secret, member_id, order_id):
        raise OrderNotFound("No such order.", details={"order_id": order_id})
    record = await guard.pending(order_id)
    if record is not None and int(record["member_id"]) == member_id:
        # Committed between our two reads? The database answers again.
        found = await container.order_reads.committed(member_id, [order_id])
        if order_id in found:
            return found[order_id]
        if not _recent(record) and await guard.drained_past(record, QUEUED_WITHIN_SECONDS):
            return await _never_queued(container, record)
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
    return _lost_view(order_id)


def _lost_view(order_id: str) -> OrderView:
    return OrderView(
        order_id=order_id,
        status=OrderStatus.FAILURE.value,
        train_code=None,
        date=None,
        from_station=None,
        to_station=None,
        created_at=order_id_time(order_id),
        error={
            "code": "LOST_IN_FAILOVER",
            "message": "The order was accepted but lost in a failover before it was committed; "
            "no seat is held and nothing was charged. Please order again.",
        },
    )


async def _never_queued(container: OrderContext, record: Mapping[str, Any]) -> OrderView:
    """An order admitted (its pending record written, its key claimed) whose process ended before it
    was queued: the committers have drained its train-day past it and the system of record never got
    it. Its admission is given back (sale token, duplicate markers, key, pending record, trips) and it
    reads as lost from now on, so neither the passenger nor a retry under its key waits for ever."""
    order_id = str(record["order_id"])
    member_id = int(record["member_id"])
    passengers = [int(p["passenger_id"]) for p in record.get("passengers", [])]
    log.warning("order_never_queued", order_id=order_id)
    await container.guard.refuse_order(
        str(record["train_code"]),
        dt.date.fromisoformat(str(record["date"])),
        member_id,
        passengers,
        order_id,
        record.get("idempotency_key"),
    )
    await forget_trips(container, [(order_id, traveller_keys_of(record.get("passengers", [])))])
    return _lost_view(order_id)


async def cached_order(container: OrderContext, *, member_id: int, order_id: str) -> OrderView | None:
    """The member's order as the view cache holds it, or None: one cache read, never the database."""
    cached, _ = await container.order_views.order(order_id.strip().lower())
    if cached is None:
        return None
    owner, view = decode_order(cached)
    return view if owner == member_id else None


async def order_after(
    container: OrderContext,
    *,
    member_id: int,
    order_id: str,
    before: OrderView | None,
    changed_now: bool,
    paid: bool,
) -> OrderView:
    """The order as this request's payment (``paid``) or cancellation left it, to answer the member.

    When this very request moved the order on from held and unpaid, and ``before`` (the cached view
    read before the request) showed it held and unpaid, the answer is ``before`` with the change
    applied: while an order is held and unpaid nothing but a payment, a cancel or an expiry changes
    it, and the request found it so under its row lock. Otherwise (a repeat, a change's difference,
    nothing cached) the order is read back."""
    if (
        changed_now
        and before is not None
        and before.status == OrderStatus.SUCCESS.value
        and before.payment_status == PaymentStatus.UNPAID.value
    ):
        unpaid = TicketStatus.UNPAID.value
        ticket_status = TicketStatus.PAID.value if paid else TicketStatus.CANCELLED.value
        tickets = tuple(replace(t, status=ticket_status) if t.status == unpaid else t for t in before.tickets)
        if paid:
            return replace(before, payment_status=PaymentStatus.PAID.value, tickets=tickets)
        return replace(before, status=OrderStatus.CANCEL.value, tickets=tickets)
    return await get_order(container, member_id=member_id, order_id=order_id)


def _encode_cursor(created_at: dt.datetime, order_id: str) -> str:
    raw = json.dumps([as_utc(created_at).isoformat(), order_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[dt.datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, order_id = json.loads(raw)
        return as_utc(dt.datetime.fromisoformat(created)), str(order_id)
    except (ValueError, TypeError) as exc:
        raise BadCursor("The cursor is not valid.") from exc


async def list_orders(
    container: OrderContext, *, member_id: int, limit: int = 20, cursor: str | None = None
) -> tuple[list[OrderView], str | None]:
    """The member's orders, newest first; the first page also shows orders still in the queue."""
    limit = max(1, min(limit, MAX_PAGE))
    reads = container.order_reads
    before = _decode_cursor(cursor) if cursor else None
    name = f"orders:{limit}:{cursor or ''}"
    cached, generation = await container.order_views.member_entry(member_id, name)
    if cached is not None:
        views, more = decode_page(cached)
    else:
        views, more = await reads.page(member_id, limit, before)
        if generation is not None:
            await container.order_views.keep_member_entry(
                member_id, name, generation, encode_page(views, more)
            )
    pending: list[Mapping[str, Any]] = []
    if not cursor:
        records = await container.guard.pending_of_member(member_id)
        listed = {v.order_id for v in views}
        records = [r for r in records if str(r["order_id"]) not in listed]
        if records:
            known = await reads.known([str(r["order_id"]) for r in records])
            pending = [r for r in records if str(r["order_id"]) not in known]
    items = [_pending_view(r, 0) for r in pending] + views
    next_cursor = _encode_cursor(views[-1].created_at, views[-1].order_id) if more and views else None
    return items, next_cursor


async def list_tickets(container: OrderContext, *, member_id: int, limit: int = 200) -> list[TicketView]:
    """The member's tickets, newest first."""
    limit = max(1, min(limit, 500))
    name = f"tickets:{limit}"
    cached, generation = await container.order_views.member_entry(member_id, name)
    if cached is not None:
        return decode_tickets(cached)
    tickets = await container.order_reads.tickets(member_id, limit)
    if generation is not None:
        await container.order_views.keep_member_entry(member_id, name, generation, encode_tickets(tickets))
    return tickets
