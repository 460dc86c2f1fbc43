"""Committing queued orders: a batch of order messages becomes orders and tickets in ONE transaction.

Invariants:
- Idempotent on the order id: orders are inserted with ``ON CONFLICT (id) DO NOTHING`` and tickets
  only for the orders this very statement inserted (their ids are derived from the order id), so a
  redelivered message, or two committers racing on the same message, changes nothing.
- The ticket exclusion constraint (PostgreSQL) is the last line of defence: if the batch violates it,
  orders are retried one by one, and an order that still fails is written ``FAILURE``
  (``SEAT_CONFLICT``) and its seats are given back to the allocator (idempotent on the order id) —
  the compensation, without a coordinator.
- Transient store errors propagate: the caller retries later and does not acknowledge, so nothing
  accepted is lost.
- Load epochs: an order is committed only if its train-day is still loaded under the epoch it was
  allocated under (carried in the message). Otherwise the day was rebuilt from the system of record
  (a total loss of Redis data) and the new copy never had the order's seats: committing it would
  hold in the database seats the allocator sells again, so it is written ``FAILURE``
  (``LOST_IN_FAILOVER``) and nothing is given back. A rebuild can still land between that check and
  the commit; the epoch is read again after the commit and, if it moved, the day is reconciled
  (``sales.reconcile_day`` marks the committed seats held again).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import structlog
from sqlalchemy import Table, insert, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from railbook.adapters.db.models import DailySeat, Order, Outbox, Ticket
from railbook.domain.order_state import OrderStatus, PaymentStatus, TicketStatus, transition
from railbook.services.booking.accept import OrderContext, ticket_id
from railbook.services.ports import HeldSeat
from railbook.services.sales.service import ensure_day_loaded, reconcile_day

log = structlog.get_logger(__name__)

# Every queued order arrives PENDING; committing it is this transition.
COMMITTED = transition(OrderStatus.PENDING, OrderStatus.SUCCESS)
FAILED = transition(OrderStatus.PENDING, OrderStatus.FAILURE)
TICKET_ISSUED = "ticket.issued"


@dataclass(frozen=True, slots=True)
class OrderMessage:
    """One accepted order as the queue carries it (booking payload + the allocator's seats)."""

    order_id: str
    member_id: int
    daily_train_id: int
    train_code: str
    date: dt.date
    from_index: int
    to_index: int
    from_station: str
    to_station: str
    passengers: tuple[Mapping[str, Any], ...]
    seats: tuple[Mapping[str, Any], ...]
    idempotency_key: str | None
    request_hash: str | None
    created_at: dt.datetime
    epoch: str | None = None  # the load epoch it was allocated under (None: unknown, not checked)

    @property
    def passenger_ids(self) -> list[int]:
        return [int(p["passenger_id"]) for p in self.passengers]


def parse_message(fields: Mapping[Any, Any]) -> OrderMessage:
    """Decode a stream entry / queue item (bytes or str fields)."""
    text = {
        (k.decode() if isinstance(k, bytes) else str(k)): (v.decode() if isinstance(v, bytes) else str(v))
        for k, v in fields.items()
    }
    body = json.loads(text["order"])
    seats = json.loads(text.get("seats", "[]"))
    return OrderMessage(
        order_id=text.get("order_id") or str(body["order_id"]),
        member_id=int(body["member_id"]),
        daily_train_id=int(body["daily_train_id"]),
        train_code=str(body["train_code"]),
        date=dt.date.fromisoformat(str(body["date"])),
        from_index=int(body["from_index"]),
        to_index=int(body["to_index"]),
        from_station=str(body["from_station"]),
        to_station=str(body["to_station"]),
        passengers=tuple(body["passengers"]),
        seats=tuple(sorted(seats, key=lambda s: int(s["position"]))),
        idempotency_key=body.get("idempotency_key"),
        request_hash=body.get("request_hash"),
        created_at=dt.datetime.fromisoformat(str(body["created_at"])),
        epoch=text.get("epoch"),
    )


@dataclass
class CommitOutcome:
    committed: list[OrderMessage] = field(default_factory=list)  # SUCCESS now (or already)
    failed: list[OrderMessage] = field(default_factory=list)  # FAILURE, seats given back


@dataclass
class SeatIds:
    """daily_seat ids by (class, seat index), per daily train; loaded once (a day's seats never change)."""

    by_day: dict[int, dict[tuple[str, int], int]] = field(default_factory=dict)

    async def ids(self, session: AsyncSession, daily_train_id: int) -> dict[tuple[str, int], int]:
        known = self.by_day.get(daily_train_id)
        if known is None:
            rows = (
                await session.execute(
                    select(DailySeat.seat_class, DailySeat.seat_index, DailySeat.id).where(
                        DailySeat.daily_train_id == daily_train_id
                    )
                )
            ).all()
            known = {(c, i): sid for c, i, sid in rows}
            if len(self.by_day) > 512:
                self.by_day.clear()
            self.by_day[daily_train_id] = known
        return known


class CommitContext(OrderContext, Protocol):
    """The order context and the process's cache of daily seat ids."""

    seat_ids: SeatIds


def _insert(session: AsyncSession, model: Any) -> Any:
    if session.bind.dialect.name == "postgresql":
        return pg_insert(model)
    return sqlite_insert(model)


def _order_row(
    msg: OrderMessage,
    status: OrderStatus,
    deadline_seconds: int,
    *,
    error: str | None = None,
    error_message: str | None = None,
) -> dict[str, Any]:
    success = status == OrderStatus.SUCCESS
    prices = {i: int(p.get("price_fen", 0)) for i, p in enumerate(msg.passengers)}
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
        "total_fen": sum(prices.values()) if success else 0,
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
                "daily_seat_id": seat_ids[(seat_class, index)],
                "seat_class": seat_class,
                "seat_index": index,
                "seat_name": str(seat["seat_name"]),
                "from_index": msg.from_index,
                "to_index": msg.to_index,
                "price_fen": int(passenger.get("price_fen", 0)),
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
    ON CONFLICT (id) DO NOTHING
    RETURNING id
    """
)
# Conflict target is the primary key only: an exclusion-constraint violation must raise.
_PG_TICKETS = text(
    """
    INSERT INTO ticket (id, order_id, member_id, passenger_id, passenger_name, daily_train_id,
        daily_seat_id, seat_class, seat_index, seat_name, from_index, to_index, price_fen, status,
        created_at, updated_at)
    SELECT t.id, t.order_id, t.member_id, t.passenger_id, t.passenger_name, t.daily_train_id,
        t.daily_seat_id, t.seat_class, t.seat_index, t.seat_name, t.from_index, t.to_index,
        t.price_fen, :status, t.created_at, :now
    FROM unnest(CAST(:id AS varchar[]), CAST(:order_id AS varchar[]), CAST(:member_id AS bigint[]),
        CAST(:passenger_id AS bigint[]), CAST(:passenger_name AS varchar[]),
        CAST(:daily_train_id AS bigint[]), CAST(:daily_seat_id AS bigint[]),
        CAST(:seat_class AS varchar[]), CAST(:seat_index AS int[]), CAST(:seat_name AS varchar[]),
        CAST(:from_index AS smallint[]), CAST(:to_index AS smallint[]), CAST(:price_fen AS int[]),
        CAST(:created_at AS timestamptz[]))
        AS t(id, order_id, member_id, passenger_id, passenger_name, daily_train_id, daily_seat_id,
        seat_class, seat_index, seat_name, from_index, to_index, price_fen, created_at)
    ON CONFLICT (id) DO NOTHING
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
    container: CommitContext, session: AsyncSession, messages: Sequence[OrderMessage]
) -> set[str]:
    """``_write`` on PostgreSQL: the same rows, written column-wise by the three statements above."""
    now = dt.datetime.now(dt.UTC)
    rows = [_order_row(m, COMMITTED, container.settings.pay_deadline_seconds) for m in messages]
    for row in rows:
        row["request"] = json.dumps(row["request"], ensure_ascii=False)  # text, cast to json by the statement
    orders = {name: [row[name] for row in rows] for name in _ORDER_COLUMNS}
    result = await session.execute(
        _PG_ORDERS,
        {**orders, "status": COMMITTED.value, "payment_status": PaymentStatus.UNPAID.value, "now": now},
    )
    inserted = {row[0] for row in result}
    seat_ids = container.seat_ids
    tickets: dict[str, list[Any]] = {name: [] for name in _TICKET_COLUMNS}
    keys: list[str] = []
    payloads: list[str] = []
    for m in messages:
        if m.order_id not in inserted:
            continue
        issued = _ticket_rows(m, await seat_ids.ids(session, m.daily_train_id))
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
    "daily_seat_id",
    "seat_class",
    "seat_index",
    "seat_name",
    "from_index",
    "to_index",
    "price_fen",
    "created_at",
)


async def _write(
    container: CommitContext, session: AsyncSession, messages: Sequence[OrderMessage]
) -> set[str]:
    """Insert the orders (SUCCESS) and tickets of ``messages``; returns the ids inserted now."""
    if session.bind.dialect.name == "postgresql":
        return await _write_pg(container, session, messages)
    deadline = container.settings.pay_deadline_seconds
    seat_ids = container.seat_ids
    order_rows = [_order_row(m, COMMITTED, deadline) for m in messages]
    stmt = _insert(session, Order.__table__).on_conflict_do_nothing(index_elements=["id"])
    inserted = {row[0] for row in (await session.execute(stmt.returning(Order.__table__.c.id), order_rows))}
    ticket_rows: list[dict[str, Any]] = []
    outbox_rows: list[dict[str, Any]] = []
    for m in messages:
        if m.order_id not in inserted:
            continue
        rows = _ticket_rows(m, await seat_ids.ids(session, m.daily_train_id))
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
        tstmt = _insert(session, Ticket.__table__).on_conflict_do_nothing(index_elements=["id"])
        await session.execute(tstmt, ticket_rows)
    if outbox_rows:
        await session.execute(insert(cast(Table, Outbox.__table__)), outbox_rows)  # Core: no ORM bulk step
    return inserted


async def _fail(container: CommitContext, msg: OrderMessage, code: str, text: str) -> None:
    """Record the order as FAILURE (no tickets), then give its seats back (idempotent on the order id)."""
    async with container.sessionmaker() as session, session.begin():
        row = _order_row(msg, FAILED, 0, error=code, error_message=text)
        await session.execute(
            _insert(session, Order.__table__).on_conflict_do_nothing(index_elements=["id"]), [row]
        )
    await _release(container, msg)


async def _release(container: CommitContext, msg: OrderMessage) -> None:
    """Give a failed order's seats back to the allocator, except the segments the system of record holds
    for another order; only to the copy of the day they were allocated in (its load epoch).

    Invariant: the allocator never shows free a segment that an active ticket holds. A seat conflict
    means the allocator had that segment free although a committed ticket holds it (a rebuild raced a
    commit, or a release was applied twice after a loss of allocator data); the failed order's bits
    are then the only thing marking it sold, so they stay, and the conflict heals the drift instead of
    repeating it. Each released piece has its own release id, so a retry changes nothing.
    """
    wanted = [(str(s["seat_class"]), int(s["seat_index"])) for s in msg.seats]
    if not wanted:
        return
    async with container.sessionmaker() as session:
        rows = (
            await session.execute(
                select(Ticket.seat_class, Ticket.seat_index, Ticket.from_index, Ticket.to_index).where(
                    Ticket.daily_train_id == msg.daily_train_id,
                    Ticket.status.in_([TicketStatus.UNPAID.value, TicketStatus.PAID.value]),
                    Ticket.seat_index.in_(sorted({i for _, i in wanted})),
                    Ticket.from_index < msg.to_index,
                    Ticket.to_index > msg.from_index,
                    Ticket.order_id != msg.order_id,
                )
            )
        ).all()
    held: dict[tuple[str, int], set[int]] = {}
    for seat_class, index, a, b in rows:
        held.setdefault((seat_class, index), set()).update(range(a, b))
    whole = [HeldSeat(c, i) for c, i in wanted if not held.get((c, i))]
    if whole:
        await container.allocator.release(
            msg.train_code,
            msg.date,
            msg.from_index,
            msg.to_index,
            whole,
            release_id=msg.order_id,
            expected_epoch=msg.epoch,
        )
    for c, i in wanted:
        taken = held.get((c, i))
        if not taken:
            continue
        log.warning("order_release_kept_held_segments", order_id=msg.order_id, seat_class=c, seat_index=i)
        for a, b in _free_runs(msg.from_index, msg.to_index, taken):
            await container.allocator.release(
                msg.train_code,
                msg.date,
                a,
                b,
                [HeldSeat(c, i)],
                release_id=f"{msg.order_id}:{c}:{i}:{a}-{b}",
                expected_epoch=msg.epoch,
            )


def _free_runs(start: int, end: int, taken: set[int]) -> list[tuple[int, int]]:
    """Maximal runs of segments in ``start..end-1`` not in ``taken``, as journeys ``(a, b)``."""
    runs: list[tuple[int, int]] = []
    a: int | None = None
    for k in range(start, end + 1):
        free = k < end and k not in taken
        if free and a is None:
            a = k
        elif not free and a is not None:
            runs.append((a, k))
            a = None
    return runs


Day = tuple[str, dt.date]


async def _epochs(container: CommitContext, messages: Sequence[OrderMessage]) -> dict[Day, str | None]:
    """The current load epoch of every train-day of these messages that carry one (one round trip)."""
    days = sorted({(m.train_code, m.date) for m in messages if m.epoch is not None})
    if not days:
        return {}
    return dict(zip(days, await container.allocator.epochs(days), strict=True))


LOST_MESSAGE = (
    "The order was accepted but lost in a failover before it was committed; no seat is held and "
    "nothing was charged. Please order again."
)


async def _lose(container: CommitContext, stale: Sequence[OrderMessage], outcome: CommitOutcome) -> set[Day]:
    """Write orders of a lost copy of their day ``FAILURE`` / ``LOST_IN_FAILOVER`` (nothing to give back:
    the rebuilt copy never had their seats). An order already written keeps its state; one already
    committed is the drift a rebuild racing its commit leaves, and its day is returned for repair."""
    async with container.sessionmaker() as session, session.begin():
        rows = [_order_row(m, FAILED, 0, error="LOST_IN_FAILOVER", error_message=LOST_MESSAGE) for m in stale]
        stmt = _insert(session, Order.__table__).on_conflict_do_nothing(index_elements=["id"])
        lost = {row[0] for row in await session.execute(stmt.returning(Order.__table__.c.id), rows)}
        earlier = [m.order_id for m in stale if m.order_id not in lost]
        states: dict[str, str] = {}
        if earlier:
            found = await session.execute(select(Order.id, Order.status).where(Order.id.in_(earlier)))
            states = {order_id: state for order_id, state in found.all()}
    repair: set[Day] = set()
    for m in stale:
        if m.order_id in lost or states.get(m.order_id) == OrderStatus.FAILURE.value:
            outcome.failed.append(m)
        else:
            outcome.committed.append(m)
            repair.add((m.train_code, m.date))
    if lost:
        log.warning(
            "orders_lost_in_failover", n=len(lost), days=sorted({f"{m.train_code} {m.date}" for m in stale})
        )
    return repair


async def _repair(container: CommitContext, days: set[Day]) -> None:
    """Reconcile days a rebuild may have raced a commit on (best effort: the scheduler sweeps too)."""
    for code, date in sorted(days):
        try:
            await ensure_day_loaded(container, code, date)
            await reconcile_day(container, code, date)
        except Exception as exc:
            log.warning("order_commit_repair_failed", train_code=code, date=str(date), error=repr(exc)[:200])


async def commit_batch(container: CommitContext, messages: Sequence[OrderMessage]) -> CommitOutcome:
    """Write a batch of queued orders; see the module docstring for the invariants it keeps."""
    outcome = CommitOutcome()
    if not messages:
        return outcome
    unique: dict[str, OrderMessage] = {}
    for m in messages:
        unique.setdefault(m.order_id, m)
    epochs = await _epochs(container, list(unique.values()))
    stale = [m for m in unique.values() if m.epoch is not None and epochs[(m.train_code, m.date)] != m.epoch]
    repair = await _lose(container, stale, outcome) if stale else set()
    lost_ids = {m.order_id for m in stale}
    batch = [m for m in unique.values() if m.order_id not in lost_ids]
    await _commit_current(container, batch, outcome)
    if batch:
        # A rebuild that landed between the check and the commit has not seen these orders.
        after = await _epochs(container, batch)
        repair |= {day for day, epoch in after.items() if epoch != epochs[day]}
    if repair:
        await _repair(container, repair)
    return outcome


async def _commit_current(
    container: CommitContext, batch: Sequence[OrderMessage], outcome: CommitOutcome
) -> None:
    """Commit orders of the current copy of their day (the batch, then one by one on a conflict)."""
    if not batch:
        return
    try:
        async with container.sessionmaker() as session, session.begin():
            inserted = await _write(container, session, batch)
    except (IntegrityError, LookupError):
        log.warning("order_batch_conflict", size=len(batch))
        inserted = set()
        for m in batch:
            try:
                async with container.sessionmaker() as session, session.begin():
                    inserted |= await _write(container, session, [m])
            except (IntegrityError, LookupError) as exc:
                # LookupError: a seat the day does not have (the allocator and the database disagree).
                log.warning("order_seat_conflict", order_id=m.order_id, error=repr(exc)[:200])
                await _fail(
                    container,
                    m,
                    "SEAT_CONFLICT",
                    "The seats could not be held in the system of record; nothing was charged.",
                )
                outcome.failed.append(m)
    failed_ids = {m.order_id for m in outcome.failed}
    already = [m for m in batch if m.order_id not in inserted and m.order_id not in failed_ids]
    if already:
        # Redelivered: a committed order stays as it is; a failed one gets its release retried.
        async with container.sessionmaker() as session:
            rows = await session.execute(
                select(Order.id, Order.status).where(Order.id.in_([m.order_id for m in already]))
            )
            states: dict[str, str] = {order_id: state for order_id, state in rows.all()}
        for m in already:
            if states.get(m.order_id) == OrderStatus.FAILURE.value:
                await _release(container, m)
                outcome.failed.append(m)
            else:
                outcome.committed.append(m)
    outcome.committed.extend(m for m in batch if m.order_id in inserted)


def stable_uuid(value: str) -> str:
    """The canonical text of a uuid (ids in URLs may come in upper case)."""
    return str(uuid.UUID(value))
