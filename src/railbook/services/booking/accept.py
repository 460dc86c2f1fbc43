"""Placing an order: validate, protect, take a sale token, then one atomic allocate-and-enqueue call.

The accept path asks no database as a rule: the member's passengers come from a cache (in process,
then Redis, filled from the database on a miss), and "this passenger already has a pending or unpaid
order on this train-day" is answered by the duplicate markers in the admission script, kept from
admission until the order is paid, cancelled or expired. Markers are trusted only where they were
restored from the database since the last loss of Redis data; elsewhere the database answers (one
indexed query). Train-day metadata (stops, station names and codes, prices) comes from a small
in-process TTL cache. The order is written to the database later, in batches, by the order committer
(``order_commit``).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog
import uuid_utils
from sqlalchemy import bindparam, func, literal_column, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from railbook.adapters.db.models import (
    DailyPairInventory,
    DailyTrain,
    DailyTrainStop,
    Order,
    Passenger,
    Station,
    Ticket,
    Train,
)
from railbook.config import Settings
from railbook.domain.errors import (
    BadJourney,
    DateNotOnSale,
    DomainError,
    DuplicateOrder,
    IdempotencyKeyReused,
    InvalidInput,
    NotFound,
    PassengerNotFound,
    SoldOut,
    StationNotFound,
    TrainNotFound,
    Unavailable,
)
from railbook.domain.order_state import TicketStatus
from railbook.domain.seating import AllocationRequest, PassengerSeatRequest, SeatAssignment
from railbook.services.ports import Admission, AdmissionRefused, Allocator

log = structlog.get_logger(__name__)

MAX_PASSENGERS = 5
TRAIN_DAY_TTL_SECONDS = 60.0
MISSING_TRAIN_DAY_TTL_SECONDS = 1.0
IDEMPOTENCY_TTL_SECONDS = 26 * 3600
PENDING_RECORD_TTL_SECONDS = 24 * 3600
# A committed order's markers outlive its pay deadline by this much (expiry deletes them on time;
# this only bounds what a missed deletion can cost: refusals of a passenger who is free again).
MARKER_MARGIN_SECONDS = 300


class MarkersUnknown(Exception):
    """The train-day's duplicate markers are not known to be complete (not restored since a loss of
    Redis data): the caller asks the database and admits with ``checked=True``."""


def marker_keep_seconds(settings: Settings) -> int:
    """How long a committed, unpaid order's duplicate markers live: its pay deadline and a margin."""
    return settings.pay_deadline_seconds + MARKER_MARGIN_SECONDS


class OrderGuard(Protocol):
    """Protections of the accept path (Redis in distributed mode, memory when embedded).

    Sale tokens bound the orders in flight per train-day; duplicate markers refuse a second order
    for the same passenger while one is pending or unpaid (trusted once the day's markers were
    restored from the database, see ``restore_day_markers``); idempotency claims make a repeated
    request return the first answer. Every ``take``/``claim`` has its undo, used when the order is
    refused.
    """

    async def check_rates(self, member_id: int, client_ip: str) -> None: ...

    async def claim_idempotency(
        self, member_id: int, key: str, request_hash: str, order_id: str
    ) -> str | None:
        """Claim the key for this order; returns the existing claim's JSON when already claimed."""
        ...

    async def drop_idempotency(self, member_id: int, key: str) -> None: ...

    async def release(
        self,
        train_code: str,
        date: dt.date,
        orders: Sequence[tuple[str, int, Sequence[int]]],
        *,
        keep_markers_seconds: int = 0,
    ) -> None:
        """Give back the tokens of finished orders and clear (or shorten) their duplicate markers."""
        ...

    def prepare_admission(
        self,
        train_code: str,
        date: dt.date,
        member_id: int,
        passenger_ids: Sequence[int],
        order_id: str,
        tokens: int,
        *,
        record: Mapping[str, Any],
        checked: bool = False,
        record_json: str | None = None,
    ) -> Admission | None:
        """``admit_order`` without an idempotency key, prepared to run in the allocator's round trip
        (``Allocator.allocate(admission=...)``); None when this guard has no round trip to share."""
        ...

    async def admit_order(
        self,
        train_code: str,
        date: dt.date,
        member_id: int,
        passenger_ids: Sequence[int],
        order_id: str,
        tokens: int,
        *,
        record: Mapping[str, Any],
        idempotency: tuple[str, str] | None,
        checked: bool = False,
        record_json: str | None = None,
    ) -> str | None:
        """The accept path's protections in one step: claim the idempotency key (if any), set the
        duplicate markers, take a sale token and keep the pending record (``record_json``: the same
        record already encoded, when the caller has it). Returns the existing claim's
        JSON (and changes nothing) when the key was claimed already. The markers and the token are set
        atomically or not at all: Conflict (DUPLICATE_ORDER) or Unavailable (SALE_BUSY) if not, and
        MarkersUnknown (nothing changed) if the day's markers are not trusted and not ``checked``."""
        ...

    async def refuse_order(
        self,
        train_code: str,
        date: dt.date,
        member_id: int,
        passenger_ids: Sequence[int],
        order_id: str,
        idempotency_key: str | None,
    ) -> None:
        """Undo ``admit_order`` for an order the allocator refused: token, markers, record, key."""
        ...

    async def restore_markers(
        self, train_code: str, date: dt.date, holds: Sequence[tuple[str, int, int]], ttl_seconds: int
    ) -> None:
        """Set the markers (order, member, passenger) where none exists."""
        ...

    async def trust_markers(self, train_code: str, date: dt.date) -> None:
        """The day's markers are complete: admissions may rely on them alone."""
        ...

    async def lookup(
        self, member_id: int, passenger_ids: Sequence[int], train_code: str, date: dt.date
    ) -> tuple[dict[int, str] | None, str, bool]:
        """Cached names of these passengers (None unless all are cached), the member's passenger
        generation, and whether the day's markers are trusted; one round trip."""
        ...

    async def passengers_generation(self, member_id: int) -> str:
        """Read before the database, passed to ``cache_passengers``: a change in between voids the fill."""
        ...

    async def cache_passengers(self, member_id: int, generation: str, names: Mapping[int, str]) -> None: ...

    async def forget_passengers(self, member_id: int) -> None: ...

    async def remember_pending(self, record: Mapping[str, Any]) -> None: ...

    async def pending(self, order_id: str) -> dict[str, Any] | None: ...

    async def pending_of_member(self, member_id: int) -> list[dict[str, Any]]: ...

    async def forget_pending(self, orders: Sequence[tuple[str, int]]) -> None: ...

    async def queue_position(self, record: Mapping[str, Any]) -> int: ...


class OrderContext(Protocol):
    """What these use cases need from the composition root (``bootstrap.Container``)."""

    settings: Settings
    sessionmaker: async_sessionmaker[AsyncSession]
    allocator: Allocator
    jwt_secret: str
    guard: OrderGuard
    train_days: TrainDayCache
    member_cache: MemberCache
    sold_out_memo: SoldOutMemo
    accept_slots: asyncio.Semaphore
    accept_reader: AcceptReader | None
    marker_restores: set[tuple[str, dt.date]]
    day_loads: dict[tuple[str, dt.date], asyncio.Task[bool]]


# --------------------------------------------------------------------------------------------
# Order ids: uuid7 strings whose last 32 bits are an HMAC tag over (member, the other bits).


def issue_order_id(secret: str, member_id: int) -> str:
    """A time-ordered id that only this system can have issued to this member."""
    raw = bytearray(uuid_utils.uuid7().bytes)
    raw[12:16] = _order_tag(secret, member_id, bytes(raw[:12]))
    return str(uuid.UUID(bytes=bytes(raw)))


def verify_order_id(secret: str, member_id: int, order_id: str) -> bool:
    """True when ``order_id`` was issued by ``issue_order_id`` to this member."""
    try:
        raw = uuid.UUID(order_id).bytes
    except (ValueError, AttributeError, TypeError):
        return False
    if len(order_id) != 36 or raw[6] >> 4 != 7:
        return False
    return hmac.compare_digest(raw[12:16], _order_tag(secret, member_id, raw[:12]))


def order_id_time(order_id: str) -> dt.datetime:
    """When the id was issued (the uuid7 millisecond timestamp)."""
    ms = int.from_bytes(uuid.UUID(order_id).bytes[:6], "big")
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


def _order_tag(secret: str, member_id: int, head: bytes) -> bytes:
    return hmac.digest(secret.encode(), b"order:%d:%s" % (member_id, head), "sha256")[:4]


def ticket_id(order_id: str, position: int) -> str:
    """Deterministic per (order, passenger position): a redelivered message inserts nothing new."""
    return str(uuid.uuid5(uuid.UUID(order_id), f"ticket:{position}"))


# --------------------------------------------------------------------------------------------
# Train-day metadata, cached in process.


@dataclass(frozen=True, slots=True)
class TrainDay:
    daily_train_id: int
    train_code: str
    date: dt.date
    station_names: tuple[str, ...]
    index_of: Mapping[str, int]  # station name and telegraph code → stop index
    prices: Mapping[tuple[str, int, int], int]  # (class, from, to) → fen
    classes: frozenset[str]


@dataclass
class TrainDayCache:
    """Train-day metadata for the accept path: one loader per key at a time (single flight), short TTL.

    A day's stops and prices never change once its sale has opened, so a stale entry is harmless;
    missing days are cached for a second only, so a day opened just now is seen at once.
    """

    entries: dict[tuple[str, dt.date], tuple[float, TrainDay | None]] = field(default_factory=dict)
    loading: dict[tuple[str, dt.date], asyncio.Future[TrainDay | None]] = field(default_factory=dict)

    async def get(
        self, key: tuple[str, dt.date], load: Callable[[], Awaitable[TrainDay | None]]
    ) -> TrainDay | None:
        now = time.monotonic()
        hit = self.entries.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        pending = self.loading.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[TrainDay | None] = asyncio.get_running_loop().create_future()
        self.loading[key] = future
        try:
            value = await load()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it, nobody logs it as lost
            raise
        finally:
            self.loading.pop(key, None)
        ttl = TRAIN_DAY_TTL_SECONDS if value is not None else MISSING_TRAIN_DAY_TTL_SECONDS
        self.entries[key] = (time.monotonic() + ttl, value)
        if len(self.entries) > 4096:
            self.entries.clear()
        future.set_result(value)
        return value


async def _load_train_day(session: AsyncSession, train_code: str, date: dt.date) -> TrainDay | None:
    daily = (
        await session.execute(
            select(DailyTrain.id).where(DailyTrain.train_code == train_code, DailyTrain.service_date == date)
        )
    ).scalar_one_or_none()
    if daily is None:
        return None
    stops = (
        await session.execute(
            select(DailyTrainStop.stop_index, DailyTrainStop.station_name, Station.code)
            .join(Station, Station.id == DailyTrainStop.station_id)
            .where(DailyTrainStop.daily_train_id == daily)
            .order_by(DailyTrainStop.stop_index)
        )
    ).all()
    prices = (
        await session.execute(
            select(
                DailyPairInventory.seat_class,
                DailyPairInventory.from_index,
                DailyPairInventory.to_index,
                DailyPairInventory.price_fen,
            ).where(DailyPairInventory.daily_train_id == daily)
        )
    ).all()
    index_of: dict[str, int] = {}
    for idx, name, code in stops:
        index_of[name] = idx
        index_of[code] = idx
    return TrainDay(
        daily_train_id=daily,
        train_code=train_code,
        date=date,
        station_names=tuple(name for _, name, _ in stops),
        index_of=index_of,
        prices={(c, i, j): p for c, i, j, p in prices},
        classes=frozenset(c for c, _, _, _ in prices),
    )


async def train_day(container: OrderContext, train_code: str, date: dt.date) -> TrainDay:
    """The opened train-day, or DATE_NOT_ON_SALE / TRAIN_NOT_FOUND."""
    settings = container.settings
    today = dt.date.today()
    if date < today or date > today + dt.timedelta(days=settings.sale_days_ahead):
        raise DateNotOnSale(f"{date} is not on sale.", details={"date": str(date)})

    async def load() -> TrainDay | None:
        async with container.sessionmaker() as session:
            return await _load_train_day(session, train_code, date)

    day = await container.train_days.get((train_code, date), load)
    if day is not None:
        return day
    async with container.sessionmaker() as session:
        known = (await session.execute(select(Train.id).where(Train.code == train_code))).scalar_one_or_none()
    if known is None:
        raise TrainNotFound(f"No train {train_code}.", details={"train_code": train_code})
    raise DateNotOnSale(
        f"{train_code} on {date} is not on sale.",
        details={"date": str(date), "train_code": train_code},
    )


# --------------------------------------------------------------------------------------------
# Placing an order.


@dataclass(frozen=True, slots=True)
class PassengerChoice:
    passenger_id: int
    seat_class: str
    seat_pref: str | None = None


@dataclass(frozen=True, slots=True)
class OrderRequest:
    date: dt.date
    train_code: str
    from_station: str
    to_station: str
    passengers: tuple[PassengerChoice, ...]

    def digest(self) -> str:
        """Hash of the request body, to tell a retry from a different request under the same key."""
        body = {
            "date": self.date.isoformat(),
            "train_code": self.train_code,
            "from": self.from_station,
            "to": self.to_station,
            "passengers": [[p.passenger_id, p.seat_class, p.seat_pref] for p in self.passengers],
        }
        return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Accepted:
    order_id: str
    status: str = "PENDING"


def _journey(day: TrainDay, from_station: str, to_station: str) -> tuple[int, int]:
    i = day.index_of.get(from_station.strip())
    j = day.index_of.get(to_station.strip())
    for name, idx in (("from", i), ("to", j)):
        if idx is None:
            raw = from_station if name == "from" else to_station
            raise StationNotFound(
                f"{raw} is not a stop of {day.train_code}.",
                details={"field": name, "station": raw},
            )
    assert i is not None and j is not None
    if i >= j:
        raise BadJourney(
            f"{from_station} does not come before {to_station} on {day.train_code}.",
            details={"from": from_station, "to": to_station},
        )
    return i, j


# The member's passengers, read once and remembered briefly.

PASSENGER_CACHE_SECONDS = 10.0
CACHE_BOUND = 100_000


@dataclass
class MemberCache:
    """Per process: the member's passengers (id → name), remembered briefly.

    Only a fact that can go stale harmlessly is kept: a passenger added since is looked up at once
    (a miss asks the shared cache, then the database); one deleted since may still be booked for
    ``PASSENGER_CACHE_SECONDS`` (the ticket then names a passenger the member removed, as it would
    had the order come a moment earlier).
    """

    passengers: dict[int, tuple[float, dict[int, str]]] = field(default_factory=dict)

    def names(self, member_id: int, ids: Sequence[int], now: float) -> dict[int, str] | None:
        hit = self.passengers.get(member_id)
        if hit is None or hit[0] <= now or any(pid not in hit[1] for pid in ids):
            return None
        return hit[1]

    def remember(self, member_id: int, found: Mapping[int, str], now: float) -> None:
        if len(self.passengers) > CACHE_BOUND:
            self.passengers.clear()
        held = self.passengers.get(member_id)
        names = dict(held[1]) if held is not None and held[0] > now else {}
        names.update(found)
        self.passengers[member_id] = (now + PASSENGER_CACHE_SECONDS, names)


_passenger = Passenger.__table__
_ticket = Ticket.__table__
_order = Order.__table__


def _passenger_query(with_key: bool) -> Any:
    """One statement for the accept path: the member's passengers among the ids, whether each holds
    an unpaid ticket on the train-day, and (with an idempotency key) the order already made with it."""
    unpaid = (
        select(_ticket.c.id)
        .where(
            _ticket.c.member_id == bindparam("member_id"),
            _ticket.c.daily_train_id == bindparam("daily_train_id"),
            _ticket.c.passenger_id == _passenger.c.id,
            _ticket.c.status == TicketStatus.UNPAID.value,
        )
        .exists()
    )
    columns: list[Any] = [_passenger.c.id, _passenger.c.name, unpaid.label("busy")]
    if with_key:
        known = (
            select(_order.c.id + literal_column("' '") + func.coalesce(_order.c.request_hash, ""))
            .where(_order.c.member_id == bindparam("member_id"), _order.c.idempotency_key == bindparam("key"))
            .limit(1)
            .scalar_subquery()
        )
        columns.append(known.label("known"))
    return select(*columns).where(
        _passenger.c.member_id == bindparam("member_id"),
        _passenger.c.id.in_(bindparam("ids", expanding=True)),
    )


_QUERIES: dict[bool, Any] = {}


# The accept path's read on PostgreSQL, as one prepared statement on a plain asyncpg pool (no ORM
# compile, no transaction, no pre-ping). $1 member, $2 train-day, $3 passenger ids, $4 the key.
_ACCEPT_SQL = (
    "SELECT p.id, p.name, EXISTS (SELECT 1 FROM ticket t WHERE t.member_id = $1 AND t.daily_train_id = $2"
    " AND t.passenger_id = p.id AND t.status = '" + TicketStatus.UNPAID.value + "') AS busy{known}"
    " FROM passenger p WHERE p.member_id = $1 AND p.id = ANY($3::bigint[])"
)
_ACCEPT_SQL_PLAIN = _ACCEPT_SQL.format(known="")
_ACCEPT_SQL_KEYED = _ACCEPT_SQL.format(
    known=", (SELECT o.id || ' ' || coalesce(o.request_hash, '') FROM \"order\" o"
    " WHERE o.member_id = $1 AND o.idempotency_key = $4 LIMIT 1) AS known"
)


async def _keep(_conn: Any) -> None:
    """No reset on release (asyncpg's default costs a round trip): these connections only ever run
    single read statements outside any transaction, so they carry no session state to clear."""


class AcceptReader:
    """A small asyncpg pool for the accept path's single read. A connection found dead raises a
    disconnect error (answered 503 with Retry-After); the pool drops it and the next request
    reconnects by itself. The pool is created on first use, once, even under a crowd."""

    def __init__(self, url: str) -> None:
        self.dsn = url.replace("postgresql+asyncpg://", "postgresql://", 1)
        self.pool: Any = None
        self._creating: asyncio.Lock = asyncio.Lock()

    async def _pool(self) -> Any:
        if self.pool is None:
            async with self._creating:
                if self.pool is None:
                    import asyncpg

                    self.pool = await asyncpg.create_pool(
                        self.dsn, min_size=1, max_size=20, timeout=5, command_timeout=30, reset=_keep
                    )
        return self.pool

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        pool = await self._pool()
        async with pool.acquire(timeout=5) as conn:
            return list(await conn.fetch(sql, *args))

    async def aclose(self) -> None:
        if self.pool is not None:
            await self.pool.close()


async def _read_passengers(
    container: OrderContext, member_id: int, daily_train_id: int, ids: Sequence[int], key: str | None
) -> tuple[list[tuple[int, str, bool]], str | None]:
    """The one database read of the accept path (no transaction: a single statement)."""
    if container.settings.is_sqlite:
        stmt = _QUERIES.get(key is not None)
        if stmt is None:
            stmt = _QUERIES[key is not None] = _passenger_query(key is not None)
        params: dict[str, Any] = {"member_id": member_id, "daily_train_id": daily_train_id, "ids": list(ids)}
        if key is not None:
            params["key"] = key
        async with container.sessionmaker.kw["bind"].connect() as conn:
            rows: Sequence[Any] = (await conn.execute(stmt, params)).all()
    else:
        reader = container.accept_reader
        assert reader is not None, "the container builds the reader for PostgreSQL"
        if key is None:
            rows = await reader.fetch(_ACCEPT_SQL_PLAIN, member_id, daily_train_id, list(ids))
        else:
            rows = await reader.fetch(_ACCEPT_SQL_KEYED, member_id, daily_train_id, list(ids), key)
    known = next((r[3] for r in rows if r[3]), None) if key is not None else None
    return [(int(r[0]), str(r[1]), bool(r[2])) for r in rows], known


# Sold-out answers without touching the protections.
#
# After the allocator refused an order as SOLD_OUT, later orders for that train-day, class and a
# journey containing that one first ask the allocator's O(1) remaining count (one read-only script)
# and are refused at once when it cannot cover them: exactly the allocator's own rule (remaining <
# passengers of the class), so a seat put back by a cancel or refund is on sale again at the next
# request. The memo only picks who pays for that read; it never answers by itself, so it cannot go
# stale. Saves the admission round trip and its undo on every sold-out answer.
SOLD_OUT_MEMO_SECONDS = 2.0


@dataclass
class SoldOutMemo:
    """Per process: (train, date) → {(class, from, to): until}, journeys recently refused as sold out."""

    days: dict[tuple[str, dt.date], dict[tuple[str, int, int], float]] = field(default_factory=dict)

    def suspects(self, train_code: str, date: dt.date, classes: Sequence[str], i: int, j: int) -> bool:
        """True when a journey inside i→j of one of these classes was sold out a moment ago."""
        seen = self.days.get((train_code, date))
        if not seen:
            return False
        now = time.monotonic()
        return any(
            seen.get((c, a, b), 0.0) > now for c in classes for a in range(i, j) for b in range(a + 1, j + 1)
        )

    def remember(self, train_code: str, date: dt.date, classes: Sequence[str], i: int, j: int) -> None:
        if len(self.days) > 1024:
            self.days.clear()
        seen = self.days.setdefault((train_code, date), {})
        until = time.monotonic() + SOLD_OUT_MEMO_SECONDS
        for c in classes:
            seen[(c, i, j)] = until

    def forget(self, train_code: str, date: dt.date, classes: Sequence[str], i: int, j: int) -> None:
        """Seats are free for i→j again: so are they for every journey inside it."""
        seen = self.days.get((train_code, date))
        if seen:
            for key in [k for k in seen if k[0] in classes and i <= k[1] and k[2] <= j]:
                del seen[key]


async def _refuse_if_sold_out(
    container: OrderContext, day: TrainDay, request: OrderRequest, i: int, j: int
) -> None:
    """SOLD_OUT at the cost of one read when a recent refusal makes it likely (see SoldOutMemo)."""
    need: dict[str, int] = {}
    for p in request.passengers:
        need[p.seat_class] = need.get(p.seat_class, 0) + 1
    memo = container.sold_out_memo
    if not memo.suspects(day.train_code, day.date, list(need), i, j):
        return
    try:
        left = await container.allocator.remaining(day.train_code, day.date, i, j)
    except NotFound:
        return  # the day is not loaded: the allocating path loads it
    short = [c for c, k in need.items() if left.get(c, 0) < k]
    if not short:
        memo.forget(day.train_code, day.date, list(need), i, j)
        return
    memo.remember(day.train_code, day.date, short, i, j)
    raise SoldOut(f"{short[0]} sold out")


def _accepted_from_claim(claim: str, request_hash: str) -> Accepted:
    data = json.loads(claim)
    if data.get("hash") != request_hash:
        raise IdempotencyKeyReused("This Idempotency-Key was used with a different request.")
    return Accepted(order_id=str(data["order_id"]))


async def place_order(
    container: OrderContext,
    *,
    member_id: int,
    request: OrderRequest,
    idempotency_key: str | None = None,
    client_ip: str = "",
) -> Accepted:
    """Accept an order into the train-day's queue (202), or refuse it at once; nothing is written to
    the database here. Invariants: a sale token is held exactly while the order is in flight, its
    duplicate markers while it is pending or unpaid (both given back on every refusal; the token by
    the committer, the markers by payment, cancellation, expiry or a failed commit); the seats and
    the queue message exist together or not at all (one allocator call).

    Cost of an accepted order: no database statement once the member's passengers are cached and the
    day's markers trusted; one lookup round trip (none when this process saw the passengers in the
    last seconds), one Redis round trip for all protections and the pending record, and the
    allocator call."""
    n = len(request.passengers)
    if not 1 <= n <= MAX_PASSENGERS:
        raise InvalidInput(
            f"An order has 1 to {MAX_PASSENGERS} passengers.",
            details={"fields": [{"field": "passengers", "message": f"{n} given"}]},
        )
    ids = [p.passenger_id for p in request.passengers]
    if len(set(ids)) != n:
        raise InvalidInput(
            "A passenger appears twice in the order.",
            details={"fields": [{"field": "passengers", "message": "duplicate passenger"}]},
        )
    guard = container.guard
    settings = container.settings
    if settings.rate_limits_on:
        await guard.check_rates(member_id, client_ip)

    day = await train_day(container, request.train_code, request.date)
    i, j = _journey(day, request.from_station, request.to_station)
    for pos, p in enumerate(request.passengers):
        if p.seat_class not in day.classes:
            raise InvalidInput(
                f"{day.train_code} has no {p.seat_class} seats.",
                details={
                    "fields": [
                        {"field": f"passengers.{pos}.seat_class", "message": "class not on this train"}
                    ]
                },
            )

    async with container.accept_slots:
        return await _admit_and_enqueue(container, guard, day, member_id, request, i, j, idempotency_key)


# Orders between validation and their answer, per process. Each holds at most one Redis connection
# at a time; the bound keeps a crowd of concurrent requests below the client's connection pool
# (which refuses, rather than waits, past its size) with room to spare for everything else.
ACCEPT_SLOTS = 128


async def _admit_and_enqueue(
    container: OrderContext,
    guard: OrderGuard,
    day: TrainDay,
    member_id: int,
    request: OrderRequest,
    i: int,
    j: int,
    idempotency_key: str | None,
) -> Accepted:
    """The protections, the duplicate check and the allocation of a validated order."""
    ids = [p.passenger_id for p in request.passengers]
    # Only a keyed request is ever compared with an earlier one (a retry under its key).
    request_hash = request.digest() if idempotency_key else ""
    cache = container.member_cache
    now = time.monotonic()
    names = cache.names(member_id, ids, now)
    generation: str | None = None  # set when the shared cache was asked: a fill must match it
    trusted: bool | None = None  # the day's markers: None when not asked (admission tells)
    if names is None and not idempotency_key:
        names, generation, trusted = await guard.lookup(member_id, ids, day.train_code, day.date)
        if names is not None:
            cache.remember(member_id, names, now)
    # Known passengers and no key to answer for: a likely sold-out is settled before any database
    # read (it then wins over an unpaid order of theirs, both being immediate refusals).
    early = names is not None and not idempotency_key
    if early:
        await _refuse_if_sold_out(container, day, request, i, j)
    checked = False
    if names is None or idempotency_key or trusted is False:
        rows, known = await _read_passengers(container, member_id, day.daily_train_id, ids, idempotency_key)
        found = {pid: name for pid, name, _ in rows}
        missing = [pid for pid in ids if pid not in found]
        if missing:
            raise PassengerNotFound("Passenger not found.", details={"passenger_ids": missing})
        cache.remember(member_id, found, now)
        if generation is not None:
            await guard.cache_passengers(member_id, generation, found)
        if known is not None:  # the system of record knows this key (e.g. after a loss of the cache)
            order_id, _, first_hash = known.partition(" ")
            return _accepted_from_claim(json.dumps({"order_id": order_id, "hash": first_hash}), request_hash)
        names = found
        if trusted is False:
            await restore_day_markers(container, day)
        _refuse_if_busy(rows)
        checked = True
    if not early:
        await _refuse_if_sold_out(container, day, request, i, j)
    order_id = issue_order_id(container.jwt_secret, member_id)
    args = (container, guard, day, member_id, request, i, j, names, order_id, idempotency_key, request_hash)
    try:
        return await _enqueue(*args, checked=checked)
    except MarkersUnknown:
        # The day's markers are not trusted (never restored here, or lost with Redis data): the
        # database answers for this order, and the markers are restored for the next ones.
        rows, _ = await _read_passengers(container, member_id, day.daily_train_id, ids, None)
        await restore_day_markers(container, day)
        _refuse_if_busy(rows)
        return await _enqueue(*args, checked=True)


def _refuse_if_busy(rows: Sequence[tuple[int, str, bool]]) -> None:
    if any(busy for _, _, busy in rows):
        raise DuplicateOrder(
            "One of these passengers already has a pending or unpaid order for this train and date.",
        )


# --------------------------------------------------------------------------------------------
# Duplicate markers beyond the queue: restored from the database, deleted when an order is final.


async def restore_day_markers(container: OrderContext, day: TrainDay) -> None:
    """Set the markers of every unpaid order of the train-day, then trust the day's markers.

    Once per train-day and process at a time (concurrent requests meanwhile ask the database). An
    order committed after the read had its markers set by its own admission. An order paid or
    cancelled meanwhile may have deleted its marker before it was set again here: the unpaid
    tickets are read again after the markers are set, and the markers of orders no longer unpaid are
    deleted (a payment committed after that read deletes its marker itself, after its commit)."""
    running: set[tuple[str, dt.date]] = container.marker_restores
    key = (day.train_code, day.date)
    if key in running:
        return
    running.add(key)
    try:
        guard = container.guard
        unpaid = Ticket.status == TicketStatus.UNPAID.value
        async with container.sessionmaker() as session:
            rows = (
                await session.execute(
                    select(Ticket.order_id, Ticket.member_id, Ticket.passenger_id).where(
                        Ticket.daily_train_id == day.daily_train_id, unpaid
                    )
                )
            ).all()
        holds = [(str(o), int(m), int(p)) for o, m, p in rows]
        await guard.restore_markers(day.train_code, day.date, holds, marker_keep_seconds(container.settings))
        orders = sorted({o for o, _, _ in holds})
        still: set[str] = set()
        async with container.sessionmaker() as session:
            for start in range(0, len(orders), 1000):
                chunk = orders[start : start + 1000]
                still.update(
                    (
                        await session.execute(
                            select(Ticket.order_id).where(Ticket.order_id.in_(chunk), unpaid).distinct()
                        )
                    ).scalars()
                )
        gone: dict[str, tuple[int, list[int]]] = {}
        for o, m, p in holds:
            if o not in still:
                gone.setdefault(o, (m, []))[1].append(p)
        await guard.release(day.train_code, day.date, [(o, m, ps) for o, (m, ps) in gone.items()])
        await guard.trust_markers(day.train_code, day.date)
        log.info("duplicate_markers_restored", train_code=day.train_code, date=str(day.date), n=len(holds))
    finally:
        running.discard(key)


async def forget_markers(
    container: OrderContext, finished: Sequence[tuple[str, dt.date, str, int, Sequence[int]]]
) -> None:
    """Delete the duplicate markers of orders that are no longer pending or unpaid (paid, cancelled,
    expired): (train code, date, order id, member, passenger ids). Best effort after the commit: a
    marker left behind expires with its pay deadline and margin (``marker_keep_seconds``)."""
    by_day: dict[tuple[str, dt.date], list[tuple[str, int, Sequence[int]]]] = {}
    for code, date, order_id, member_id, pids in finished:
        by_day.setdefault((code, date), []).append((order_id, member_id, pids))
    try:
        guard = container.guard
        for (code, date), orders in by_day.items():
            await guard.release(code, date, orders)
    except Exception as exc:
        log.warning("duplicate_markers_not_cleared", error=repr(exc)[:200], orders=len(finished))


async def forget_order_markers(container: OrderContext, order_ids: Sequence[str]) -> None:
    """``forget_markers`` for these orders, read from the database."""
    if not order_ids:
        return
    async with container.sessionmaker() as session:
        rows = (
            await session.execute(
                select(Order.id, Order.train_code, Order.service_date, Order.member_id, Ticket.passenger_id)
                .join(Ticket, Ticket.order_id == Order.id)
                .where(Order.id.in_(list(order_ids)))
            )
        ).all()
    orders: dict[str, tuple[str, dt.date, int, list[int]]] = {}
    for oid, code, date, member_id, pid in rows:
        orders.setdefault(str(oid), (str(code), date, int(member_id), []))[3].append(int(pid))
    await forget_markers(container, [(c, d, o, m, ps) for o, (c, d, m, ps) in orders.items()])


async def _enqueue(
    container: OrderContext,
    guard: OrderGuard,
    day: TrainDay,
    member_id: int,
    request: OrderRequest,
    i: int,
    j: int,
    names: Mapping[int, str],
    order_id: str,
    idempotency_key: str | None,
    request_hash: str,
    *,
    checked: bool,
) -> Accepted:
    ids = [p.passenger_id for p in request.passengers]
    created_at = dt.datetime.now(dt.UTC)
    payload = {
        "v": 1,
        "order_id": order_id,
        "member_id": member_id,
        "daily_train_id": day.daily_train_id,
        "train_code": day.train_code,
        "date": day.date.isoformat(),
        "from_index": i,
        "to_index": j,
        "from_station": day.station_names[i],
        "to_station": day.station_names[j],
        "passengers": [
            {
                "passenger_id": p.passenger_id,
                "name": names[p.passenger_id],
                "seat_class": p.seat_class,
                "seat_pref": p.seat_pref,
                "price_fen": day.prices.get((p.seat_class, i, j), 0),
            }
            for p in request.passengers
        ],
        "idempotency_key": idempotency_key,
        "request_hash": request_hash or None,
        "created_at": created_at.isoformat(),
    }
    # The queue message and the pending record are the same JSON, encoded once.
    encoded = json.dumps(payload, ensure_ascii=False)
    tokens = container.settings.sale_tokens_per_train_day
    # Without a key to answer for, the admission rides in the allocation's round trip where the
    # guard can (Redis): one round trip, not two, and the seats are taken only if it admitted.
    admission = None
    if not idempotency_key:
        admission = guard.prepare_admission(
            day.train_code,
            day.date,
            member_id,
            ids,
            order_id,
            tokens,
            record=payload,
            checked=checked,
            record_json=encoded,
        )
    if admission is None:
        claim = await guard.admit_order(
            day.train_code,
            day.date,
            member_id,
            ids,
            order_id,
            tokens,
            record=payload,
            idempotency=(idempotency_key, request_hash) if idempotency_key else None,
            checked=checked,
            record_json=encoded,
        )
        if claim is not None:
            return _accepted_from_claim(claim, request_hash)
    alloc_request = AllocationRequest(
        i, j, tuple(PassengerSeatRequest(p.seat_class, p.seat_pref or None) for p in request.passengers)
    )
    message = {"order": encoded}
    try:
        await _allocate(container, day, alloc_request, order_id, message, admission)
    except AdmissionRefused as refused:  # nothing of the order is left (the admission undid itself)
        raise refused.reason from None
    except (OutcomeUnknown, asyncio.CancelledError) as exc:
        # The allocation script may have run (and queued the order) even though no answer came back:
        # undoing the claim and the markers could let a retry buy a second order. Keep them; the
        # markers lapse after AMBIGUOUS_MARKER_SECONDS unless the committer confirms the order.
        cleanup = _keep_for_the_committer(guard, day, member_id, ids, order_id)
        if isinstance(exc, asyncio.CancelledError):
            _background(cleanup)
            raise
        await cleanup
        raise Unavailable(
            "The seat store did not answer; the order may still be confirmed: read it back by its id.",
            details={"order_id": order_id},
            retry_after=2,
        ) from exc.__cause__
    except BaseException as exc:
        await guard.refuse_order(day.train_code, day.date, member_id, ids, order_id, idempotency_key)
        if isinstance(exc, SoldOut) and exc.code == "SOLD_OUT":
            classes = list(dict.fromkeys(p.seat_class for p in request.passengers))
            container.sold_out_memo.remember(day.train_code, day.date, classes, i, j)
        raise
    return Accepted(order_id=order_id)


# Duplicate markers of an order whose allocation outcome is unknown: long enough for the committer to
# confirm a queued order (it re-arms them for the unpaid period), short enough not to block a
# passenger for long when the script never ran.
AMBIGUOUS_MARKER_SECONDS = 120
_cleanups: set[asyncio.Task[None]] = set()


class OutcomeUnknown(Exception):
    """The allocator call failed without an answer: the script may or may not have run."""


def _background(coro: Awaitable[None]) -> None:
    task = asyncio.ensure_future(coro)
    _cleanups.add(task)
    task.add_done_callback(_cleanups.discard)


async def _keep_for_the_committer(
    guard: OrderGuard, day: TrainDay, member_id: int, ids: Sequence[int], order_id: str
) -> None:
    """Shorten the markers and the pending record of an order whose allocation outcome is unknown."""
    try:
        held = [(order_id, member_id, ids)]
        await guard.release(day.train_code, day.date, held, keep_markers_seconds=AMBIGUOUS_MARKER_SECONDS)
        await guard.forget_pending([(order_id, member_id)])
    except Exception:  # the store is still away: the markers' own expiry bounds the harm
        log.warning("ambiguous_order_not_shortened", order_id=order_id)


async def _allocate(
    container: OrderContext,
    day: TrainDay,
    request: AllocationRequest,
    order_id: str,
    message: Mapping[str, str],
    admission: Admission | None = None,
) -> list[SeatAssignment]:
    """One allocator call; a day the allocator lacks (restart, cache loss) is loaded once, then retried
    (an admission that came with the first call admitted the order by then: it is not sent again)."""
    try:
        return await _allocate_once(container, day, request, order_id, message, admission)
    except SoldOut:
        raise
    except NotFound as exc:
        if exc.code not in ("NOT_FOUND", "DAY_NOT_LOADED", "TRAIN_DAY_NOT_LOADED"):
            raise
        from railbook.services.sales.service import ensure_day_loaded

        await ensure_day_loaded(container, day.train_code, day.date)
        return await _allocate_once(container, day, request, order_id, message)


async def _allocate_once(
    container: OrderContext,
    day: TrainDay,
    request: AllocationRequest,
    order_id: str,
    message: Mapping[str, str],
    admission: Admission | None = None,
) -> list[SeatAssignment]:
    """The allocator's answer, or OutcomeUnknown when the call failed without one (timeout, lost
    connection): a domain error or a refused admission is an answer, anything else may hide a
    script that ran."""
    try:
        return await container.allocator.allocate(
            day.train_code, day.date, request, order_id=order_id, message=message, admission=admission
        )
    except (DomainError, AdmissionRefused):
        raise
    except Exception as exc:
        raise OutcomeUnknown(str(exc)) from exc


def idempotency_hash_token(member_id: int, key: str) -> str:
    """A compact, key-safe name for a member's idempotency key."""
    digest = hashlib.sha256(f"{member_id}:{key}".encode()).digest()[:18]
    return base64.urlsafe_b64encode(digest).decode()
