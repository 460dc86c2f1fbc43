"""A batch of committed orders written in one transaction: orders, their tickets and ``ticket.issued``
events (PostgreSQL array statements, or row inserts on SQLite), and the rows of failed orders."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import Table, insert, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from railbook.adapters.db.models import DailySeat, Order, Outbox, Ticket
from railbook.domain.order_state import OrderStatus, PaymentStatus, TicketStatus, transition
from railbook.services.booking.ports import OrderMessage, ticket_id

# Every queued order arrives PENDING; committing it is this transition.
COMMITTED = transition(OrderStatus.PENDING, OrderStatus.SUCCESS)
FAILED = transition(OrderStatus.PENDING, OrderStatus.FAILURE)
TICKET_ISSUED = "ticket.issued"


@dataclass
class SeatIds:
    """daily_seat ids by (class, seat index), per daily train; loaded once (a day's seats never change)."""

    by_day: dict[int, dict[tuple[str, int], int]] = field(default_factory=dict)

    async def ids(
        self, session: AsyncSession, daily_train_id: int, date: dt.date
    ) -> dict[tuple[str, int], int]:
        known = self.by_day.get(daily_train_id)
        if known is None:
            rows = (
                await session.execute(
                    select(DailySeat.seat_class, DailySeat.seat_index, DailySeat.id).where(
                        DailySeat.daily_train_id == daily_train_id, DailySeat.service_date == date
                    )
                )
            ).all()
            known = {(c, i): sid for c, i, sid in rows}
            if len(self.by_day) > 512:
                self.by_day.clear()
            self.by_day[daily_train_id] = known
        return known


def insert_for(session: AsyncSession, model: Any) -> Any:
    """The INSERT of the session's dialect (both offer ``on_conflict_do_nothing``)."""
    if session.bind.dialect.name == "postgresql":
        return pg_insert(model)
    return sqlite_insert(model)


def record_key(session: AsyncSession) -> list[str]:
    """The primary key of ``order`` and ``ticket``: on PostgreSQL, whose tables are partitioned by
    service date, it includes the date (an id carries its date, so this is as strong as the id)."""
    return ["id", "service_date"] if session.bind.dialect.name == "postgresql" else ["id"]


def order_row(
    msg: OrderMessage,
    status: OrderStatus,
    deadline_seconds: int,
    *,
    error: str | None = None,
    error_message: str | None = None,
) -> dict[str, Any]:
    """The order's row in ``status`` (SUCCESS: unpaid, with its total and pay deadline)."""
    success = status == OrderStatus.SUCCESS
    return {
        "id": msg.order_id,
        "member_id": msg.member_id,
        "daily_train_id": msg.daily_train_id,
        "train_code": msg.train_code,
        "service_date": msg.date,
        "from_index": msg.from_index,
        "to_index": msg.to_index,
        "from_station": msg.from_station,
        "to_station": msg.to_station,
        "status": status.value,
        "payment_status": PaymentStatus.UNPAID.value if success else None,
        "error_code": error,
        "error_message": error_message,
        "total_fen": msg.total_fen if success else 0,
        "request": {"passengers": [dict(p) for p in msg.passengers]},
        "idempotency_key": msg.idempotency_key if success else None,
        "request_hash": msg.request_hash,
        "pay_deadline": msg.created_at + dt.timedelta(seconds=deadline_seconds) if success else None,
        "created_at": msg.created_at,
        "updated_at": dt.datetime.now(dt.UTC),
    }


def _ticket_rows(msg: OrderMessage, seat_ids: Mapping[tuple[str, int], int]) -> list[dict[str, Any]]:
    now = dt.datetime.now(dt.UTC)
    rows = []
    for seat in msg.seats:
        pos = int(seat["position"])
        passenger = msg.passengers[pos]
        seat_class = str(seat["seat_class"])
        index = int(seat["seat_index"])
        rows.append(
            {
                "id": ticket_id(msg.order_id, pos),
                "order_id": msg.order_id,
                "member_id": msg.member_id,
                "passenger_id": int(passenger["passenger_id"]),
                "passenger_name": str(passenger.get("name", "")),
                "daily_train_id": msg.daily_train_id,
                "service_date": msg.date,
                "daily_seat_id": seat_ids[(seat_class, index)],
                "seat_class": seat_class,
                "seat_index": index,
                "seat_name": str(seat["seat_name"]),
                "from_index": msg.from_index,
                "to_index": msg.to_index,
                "price_fen": int(passenger.get("price_fen", 0)),
                "fare_type": str(passenger.get("fare_type") or "adult"),
                "status": TicketStatus.UNPAID.value,
                "created_at": msg.created_at,
                "updated_at": now,
            }
        )
    return rows


def _ticket_event(msg: OrderMessage, tickets: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The payload of the order's ``ticket.issued`` outbox event."""
    return {
        "order_id": msg.order_id,
        "member_id": msg.member_id,
        "train_code": msg.train_code,
        "date": msg.date.isoformat(),
        "from": msg.from_station,
        "to": msg.to_station,
        "tickets": [
            {
                "ticket_id": t["id"],
                "passenger_id": t["passenger_id"],
                "seat": t["seat_name"],
                "seat_class": t["seat_class"],
                "price_fen": t["price_fen"],
                "fare_type": t["fare_type"],
            }
            for t in tickets
        ],
    }


# PostgreSQL: a batch is three fixed statements over arrays, whatever its size. Each is prepared
# once per connection and planned once, where an executemany of rows renders a new multi-VALUES
# statement (one bind per cell) for every batch size, which the server parses and plans anew.
_PG_ORDERS = text(
    """
    INSERT INTO "order" (id, member_id, daily_train_id, train_code, service_date, from_index,
        to_index, from_station, to_station, status, payment_status, total_fen, request,
        idempotency_key, request_hash, pay_deadline, created_at, updated_at)
    SELECT o.id, o.member_id, o.daily_train_id, o.train_code, o.service_date, o.from_index,
        o.to_index, o.from_station, o.to_station, :status, :payment_status, o.total_fen,
        CAST(o.request AS json), o.idempotency_key, o.request_hash, o.pay_deadline, o.created_at, :now
    FROM unnest(CAST(:id AS varchar[]), CAST(:member_id AS bigint[]),
        CAST(:daily_train_id AS bigint[]), CAST(:train_code AS varchar[]), CAST(:service_date AS date[]),
        CAST(:from_index AS smallint[]), CAST(:to_index AS smallint[]),
        CAST(:from_station AS varchar[]), CAST(:to_station AS varchar[]), CAST(:total_fen AS int[]),
        CAST(:request AS text[]), CAST(:idempotency_key AS varchar[]), CAST(:request_hash AS varchar[]),
        CAST(:pay_deadline AS timestamptz[]), CAST(:created_at AS timestamptz[]))
        AS o(id, member_id, daily_train_id, train_code, service_date, from_index, to_index,
        from_station, to_station, total_fen, request, idempotency_key, request_hash, pay_deadline,
        created_at)
    ON CONFLICT (id, service_date) DO NOTHING
    RETURNING id
    """
)
# Conflict target is the primary key only: an exclusion-constraint violation must raise.
_PG_TICKETS = text(
    """
    INSERT INTO ticket (id, order_id, member_id, passenger_id, passenger_name, daily_train_id,
        service_date, daily_seat_id, seat_class, seat_index, seat_name, from_index, to_index, price_fen,
        fare_type, status, created_at, updated_at)
    SELECT t.id, t.order_id, t.member_id, t.passenger_id, t.passenger_name, t.daily_train_id,
        t.service_date, t.daily_seat_id, t.seat_class, t.seat_index, t.seat_name, t.from_index,
        t.to_index, t.price_fen, t.fare_type, :status, t.created_at, :now
    FROM unnest(CAST(:id AS varchar[]), CAST(:order_id AS varchar[]), CAST(:member_id AS bigint[]),
        CAST(:passenger_id AS bigint[]), CAST(:passenger_name AS varchar[]),
        CAST(:daily_train_id AS bigint[]), CAST(:service_date AS date[]), CAST(:daily_seat_id AS bigint[]),
        CAST(:seat_class AS varchar[]), CAST(:seat_index AS int[]), CAST(:seat_name AS varchar[]),
        CAST(:from_index AS smallint[]), CAST(:to_index AS smallint[]), CAST(:price_fen AS int[]),
        CAST(:fare_type AS varchar[]), CAST(:created_at AS timestamptz[]))
        AS t(id, order_id, member_id, passenger_id, passenger_name, daily_train_id, service_date,
        daily_seat_id, seat_class, seat_index, seat_name, from_index, to_index, price_fen, fare_type,
        created_at)
    ON CONFLICT (id, service_date) DO NOTHING
    """
)
_PG_OUTBOX = text(
    """
    INSERT INTO outbox (topic, key, payload, created_at)
    SELECT :topic, e.key, CAST(e.payload AS json), :now
    FROM unnest(CAST(:key AS varchar[]), CAST(:payload AS text[])) AS e(key, payload)
    """
)


async def _write_pg(
    session: AsyncSession, seat_ids: SeatIds, messages: Sequence[OrderMessage], deadline: int
) -> set[str]:
    """``write_batch`` on PostgreSQL: the same rows, written column-wise by the three statements above."""
    now = dt.datetime.now(dt.UTC)
    rows = [order_row(m, COMMITTED, deadline) for m in messages]
    for row in rows:
        row["request"] = json.dumps(row["request"], ensure_ascii=False)  # text, cast to json by the statement
    orders = {name: [row[name] for row in rows] for name in _ORDER_COLUMNS}
    result = await session.execute(
        _PG_ORDERS,
        {**orders, "status": COMMITTED.value, "payment_status": PaymentStatus.UNPAID.value, "now": now},
    )
    inserted = {row[0] for row in result}
    tickets: dict[str, list[Any]] = {name: [] for name in _TICKET_COLUMNS}
    keys: list[str] = []
    payloads: list[str] = []
    for m in messages:
        if m.order_id not in inserted:
            continue
        issued = _ticket_rows(m, await seat_ids.ids(session, m.daily_train_id, m.date))
        for ticket in issued:
            for name in _TICKET_COLUMNS:
                tickets[name].append(ticket[name])
        keys.append(m.order_id)
        payloads.append(json.dumps(_ticket_event(m, issued), ensure_ascii=False))
    if keys:
        await session.execute(_PG_TICKETS, {**tickets, "status": TicketStatus.UNPAID.value, "now": now})
        await session.execute(
            _PG_OUTBOX, {"key": keys, "payload": payloads, "topic": TICKET_ISSUED, "now": now}
        )
    return inserted


_ORDER_COLUMNS = (
    "id",
    "member_id",
    "daily_train_id",
    "train_code",
    "service_date",
    "from_index",
    "to_index",
    "from_station",
    "to_station",
    "total_fen",
    "request",
    "idempotency_key",
    "request_hash",
    "pay_deadline",
    "created_at",
)
_TICKET_COLUMNS = (
    "id",
    "order_id",
    "member_id",
    "passenger_id",
    "passenger_name",
    "daily_train_id",
    "service_date",
    "daily_seat_id",
    "seat_class",
    "seat_index",
    "seat_name",
    "from_index",
    "to_index",
    "price_fen",
    "fare_type",
    "created_at",
)


async def write_batch(
    session: AsyncSession, seat_ids: SeatIds, messages: Sequence[OrderMessage], deadline: int
) -> set[str]:
    """Insert the orders (SUCCESS) and tickets of ``messages``; returns the ids inserted now."""
    if session.bind.dialect.name == "postgresql":
        return await _write_pg(session, seat_ids, messages, deadline)
    order_rows = [order_row(m, COMMITTED, deadline) for m in messages]
    stmt = insert_for(session, Order.__table__).on_conflict_do_nothing(index_elements=record_key(session))
    inserted = {row[0] for row in (await session.execute(stmt.returning(Order.__table__.c.id), order_rows))}
    ticket_rows: list[dict[str, Any]] = []
    outbox_rows: list[dict[str, Any]] = []
    for m in messages:
        if m.order_id not in inserted:
            continue
        rows = _ticket_rows(m, await seat_ids.ids(session, m.daily_train_id, m.date))
        ticket_rows.extend(rows)
        outbox_rows.append(
            {
                "topic": TICKET_ISSUED,
                "key": m.order_id,
                "payload": _ticket_event(m, rows),
                "created_at": dt.datetime.now(dt.UTC),
            }
        )
    if ticket_rows:
        # Conflict target is the primary key only: an exclusion-constraint violation must raise.
        tstmt = insert_for(session, Ticket.__table__).on_conflict_do_nothing(
            index_elements=record_key(session)
        )
        await session.execute(tstmt, ticket_rows)
    if outbox_rows:
        await session.execute(insert(cast(Table, Outbox.__table__)), outbox_rows)  # Core: no ORM bulk step
    return inserted
