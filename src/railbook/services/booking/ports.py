"""What the booking feature needs from the outside, in its own terms; adapters implement these.

Adapters may import this module (never the use cases): the constants and errors they share with the
use cases live here too.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import uuid
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from railbook.domain.seating import AllocationRequest
from railbook.services.booking.trip_ports import RecordedTrip, TripRequest, traveller_keys_of
from railbook.services.ports import Allocation, KeptKey

PENDING_RECORD_TTL_SECONDS = 24 * 3600
# Cached read views live this long (bounds a change whose invalidation failed, see booking.view_cache);
# generations far longer than any reader's window, and than a pending record after its commit.
VIEW_TTL_SECONDS = 60
VIEW_GENERATION_TTL_SECONDS = 2 * 24 * 3600


class MarkersUnknown(Exception):
    """The train-day's duplicate markers are not known to be complete (not restored since a loss of
    Redis data): the caller asks the database and admits with ``checked=True``."""


class SeatConflict(Exception):
    """The system of record refused the tickets of a batch (the seat exclusion constraint): nothing of
    the batch was written."""


def idempotency_hash_token(member_id: int, key: str) -> str:
    """A compact, key-safe name for a member's idempotency key."""
    digest = hashlib.sha256(f"{member_id}:{key}".encode()).digest()[:18]
    return base64.urlsafe_b64encode(digest).decode()


# An order id carrying its service date has this byte at index 9 and the date in bytes 10-11
# (days after ORDER_DATE_EPOCH); the layout is ``order_ids``'s.
DATED = 0xD8
ORDER_DATE_EPOCH = dt.date(2000, 1, 1)


def order_id_date(order_id: str) -> dt.date | None:
    """The service date an order id carries, or None (an id issued without one, or not an id at all).
    A hint to find the order by, not a proof: see ``order_ids``."""
    try:
        raw = uuid.UUID(order_id).bytes
    except (ValueError, AttributeError, TypeError):
        return None
    if raw[9] != DATED or raw[6] >> 4 != 7:
        return None
    return ORDER_DATE_EPOCH + dt.timedelta(days=int.from_bytes(raw[10:12], "big"))


def ticket_id(order_id: str, position: int) -> str:
    """Deterministic per (order, passenger position): a redelivered message inserts nothing new."""
    return str(uuid.uuid5(uuid.UUID(order_id), f"ticket:{position}"))


def owed_fen(fares_fen: int, credit_fen: int) -> int:
    """What an order still owes: its fares less what a changed ticket already paid (never below 0;
    a surplus is refunded when the change is settled)."""
    return max(0, fares_fen - credit_fen)


@dataclass(frozen=True, slots=True)
class TrainDay:
    """What the accept path needs of an opened train-day: stops, their names and codes, prices."""

    daily_train_id: int
    train_code: str
    date: dt.date
    station_names: tuple[str, ...]
    index_of: Mapping[str, int]  # station name and telegraph code → stop index
    prices: Mapping[tuple[str, int, int], int]  # (class, from, to) → fen
    classes: frozenset[str]
    departure_days: tuple[int, ...] = ()  # by stop index: days after ``date`` the train leaves it
    # Per stop, when the train leaves it and reaches it (Beijing time; None at the ends of the line).
    departs_at: tuple[dt.datetime | None, ...] = ()
    arrives_at: tuple[dt.datetime | None, ...] = ()


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
    change_of: str | None = None  # the ticket a change replaces
    credit_fen: int = 0  # what the replaced ticket paid: the order's total is the rest of its fare
    boarding: dt.date | None = None  # the day the train leaves ``from`` (None: the service date)

    @property
    def total_fen(self) -> int:
        """What the order still owes once committed: its fares less the credit of a change."""
        return owed_fen(sum(int(p.get("price_fen", 0)) for p in self.passengers), self.credit_fen)

    @property
    def passenger_ids(self) -> list[int]:
        return [int(p["passenger_id"]) for p in self.passengers]

    @property
    def traveller_keys(self) -> list[str]:
        """The traveller keys of its passengers (the persons whose trips it holds), as accepted."""
        return traveller_keys_of(self.passengers)


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
    fare_type: str = "adult"
    # What was paid back on this ticket and the fee kept: a refund's, or (a CHANGED ticket) that of
    # the change's difference; None when nothing was refunded.
    refund_fen: int | None = None
    fee_fen: int | None = None


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
    change_of: str | None = None  # the ticket this order changes (改签), if it came from a change


# An order as the markers know it: (order id, member, passenger ids).
HeldOrder = tuple[str, int, Sequence[int]]


class OrderChallenge(Protocol):
    """The anti-bot check of an order, given its member's orders in the current minute (this one
    included): returns when the order may go on, raises (403 CAPTCHA_REQUIRED) when it must first
    answer a captcha. The API composes it from the member's captcha answer, if any."""

    async def __call__(self, orders_this_minute: int) -> None: ...


class OrderGuard(Protocol):
    """Protections of the accept path (Redis in distributed mode, memory when embedded).

    Sale tokens bound the orders in flight per train-day; duplicate markers refuse a second order
    for the same passenger while one is pending or unpaid (trusted once the day's markers were
    restored from the database, see ``restore_day_markers``); idempotency claims make a repeated
    request return the first answer. Every ``take``/``claim`` has its undo, used when the order is
    refused.
    """

    async def check_rates(self, member_id: int, client_ip: str) -> int:
        """Count the order against its member's and its address's limits (429 past them); returns
        the member's orders in the current minute, this one included (the order challenge reads it)."""
        ...

    async def claim_idempotency(
        self, member_id: int, key: str, request_hash: str, order_id: str
    ) -> str | None:
        """Claim the key for this order; returns the existing claim's JSON when already claimed."""
        ...

    async def drop_idempotency(self, member_id: int, key: str) -> None: ...

    async def settle(
        self,
        train_code: str,
        date: dt.date,
        orders: Sequence[HeldOrder],
        *,
        keep_markers_seconds: int = 0,
    ) -> None:
        """Return the sale tokens of finished orders and clear (or shorten) their duplicate markers."""
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

    async def marker_holders(
        self, train_code: str, date: dt.date, member_id: int, passenger_ids: Sequence[int]
    ) -> dict[int, str] | None:
        """The order holding each of these passengers' duplicate markers on the train-day (passengers
        without one left out), or None while the day's markers are not trusted; one round trip."""
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

    async def cache_passengers(
        self, member_id: int, generation: str, names: Mapping[int, str], keys: Sequence[KeptKey] = ()
    ) -> None:
        """Cache these passengers of the member, unless their list changed since ``generation`` was
        read; the member's ``keys`` (``KeptKey``) are restored first, where absent."""
        ...

    async def idempotency_claim(self, member_id: int, key: str) -> str | None:
        """The claim under the member's Idempotency-Key (``{"order_id", "hash"}`` JSON), if any."""
        ...

    async def forget_passengers(self, member_id: int) -> None: ...

    async def remember_pending(self, record: Mapping[str, Any]) -> None: ...

    async def pending(self, order_id: str) -> dict[str, Any] | None: ...

    async def pending_of_member(self, member_id: int) -> list[dict[str, Any]]: ...

    async def forget_pending(self, orders: Sequence[tuple[str, int]]) -> None: ...

    async def queue_position(self, record: Mapping[str, Any]) -> int: ...

    async def drained_past(self, record: Mapping[str, Any], margin_seconds: float) -> bool:
        """Whether the committers have read and acknowledged every order queued for the record's
        train-day up to ``margin_seconds`` after its acceptance (so, had it been queued, it would be
        in the system of record by now). False when that cannot be told."""
        ...


class OrderIntake(Protocol):
    """An order without an idempotency key taken in: the guard's admission and the allocation."""

    # Whether ``admit_and_allocate`` takes the trip claim into its round trip (a single Redis; not a
    # cluster, where a person's trips live in another slot than the train-day's keys).
    claims_trips: bool

    async def admit_and_allocate(
        self,
        train_code: str,
        date: dt.date,
        request: AllocationRequest,
        *,
        member_id: int,
        passenger_ids: Sequence[int],
        order_id: str,
        tokens: int,
        record: Mapping[str, Any],
        record_json: str,
        checked: bool,
        message: Mapping[str, str],
        trips: TripRequest | None = None,
    ) -> Allocation:
        """Admit the order (``OrderGuard.admit_order`` without a key), then seat it and queue
        ``message``; in one round trip where the store allows (Redis). A refused admission raises
        AdmissionRefused (with nothing of the order left); allocation errors are the allocator's.
        ``trips`` (only where ``claims_trips``): the trips are claimed first in the same round trip
        and the order admitted only if every one is held, else AdmissionRefused(TripsNotHeld) with
        the trips held kept (the caller settles the clash, as after ``TripGuard.claim``); on any
        other refusal they are given back."""
        ...


class AcceptReads(Protocol):
    """The accept path's reads of the system of record: single statements, no transaction."""

    async def passengers(
        self, member_id: int, daily_train_id: int, ids: Sequence[int], key: str | None
    ) -> tuple[list[tuple[int, str, bool]], str | None]:
        """(id, rider text (``domain.riders``), holds an unpaid ticket on the train-day) of the member's
        passengers among ``ids``, and with ``key`` the ``"<order id> <request hash>"`` of an order made
        with it."""
        ...

    async def kept_keys(self, member_id: int, since: dt.datetime) -> list[KeptKey]:
        """The member's orders' Idempotency-Keys the system of record keeps, of orders made since."""
        ...

    async def train_day(self, train_code: str, date: dt.date) -> TrainDay | None:
        """The opened train-day's stops and prices; None when it is not opened."""
        ...

    async def train_exists(self, train_code: str) -> bool: ...

    async def open_dates(self, train_code: str, dates: Sequence[dt.date]) -> list[dt.date]:
        """Which of ``dates`` the train has an opened train-day on, latest first."""
        ...

    async def aclose(self) -> None: ...


class OrderWrites(Protocol):
    """Statements of one transaction on orders (see ``OrderStore.transaction``)."""

    async def insert_committed(self, messages: Sequence[OrderMessage], pay_deadline_seconds: int) -> set[str]:
        """Insert the orders (SUCCESS), their tickets and ``ticket.issued`` events; the ids inserted now
        (an order already there is left as it is). SeatConflict or LookupError (a seat the day lacks)
        when the tickets cannot be held."""
        ...

    async def insert_failed(
        self, messages: Sequence[OrderMessage], code: str, message: str, *, returning: bool = False
    ) -> set[str]:
        """Insert the orders as FAILURE with this error, no tickets; with ``returning``, the ids inserted."""
        ...

    async def states(self, order_ids: Sequence[str]) -> dict[str, str]:
        """The status of each of these orders that exists."""
        ...


class OrderStore(Protocol):
    """Orders and tickets in the system of record, as the committer and the markers need them."""

    def transaction(self) -> AbstractAsyncContextManager[OrderWrites]:
        """A transaction: commits when the block ends normally, rolls back on an exception."""
        ...

    async def states(self, order_ids: Sequence[str]) -> dict[str, str]:
        """``OrderWrites.states`` outside any transaction."""
        ...

    async def held_segments(self, msg: OrderMessage) -> list[tuple[str, int, int, int]]:
        """(class, seat index, from, to) of active tickets of other orders on the message's seats that
        overlap its journey."""
        ...

    async def unpaid_holds(self, daily_train_id: int) -> list[tuple[str, int, int]]:
        """(order, member, passenger) of every unpaid ticket of the train-day."""
        ...

    async def still_unpaid(self, order_ids: Sequence[str]) -> set[str]:
        """Those of these orders that still have an unpaid ticket."""
        ...

    async def order_holds(self, order_ids: Sequence[str]) -> list[tuple[str, str, dt.date, int, int]]:
        """(order, train code, date, member, passenger) of every ticket of these orders."""
        ...

    async def passenger_cards(self, passenger_ids: Sequence[int]) -> dict[int, str]:
        """The ID numbers of these passengers (those that exist), by passenger id."""
        ...

    async def trip_state(self, order_id: str, passenger_id: int) -> tuple[str, str | None] | None:
        """The order's state and its ticket for this passenger if unpaid or paid (else None), read
        together in one statement; None when the order is not committed."""
        ...

    async def held_trips(self, passenger_ids: Sequence[int] | None, since: dt.date) -> list[RecordedTrip]:
        """The trips of every unpaid or paid ticket of these passengers (None: of everyone) on a train
        that left its origin on ``since`` or later, each with its passenger's ID number."""
        ...


class OrderReads(Protocol):
    """Committed orders and tickets read back for their member."""

    async def committed(self, member_id: int, order_ids: Sequence[str]) -> dict[str, OrderView]:
        """The member's committed orders among these ids, with their tickets."""
        ...

    async def page(
        self, member_id: int, limit: int, before: tuple[dt.datetime, str] | None
    ) -> tuple[list[OrderView], bool]:
        """Up to ``limit`` of the member's orders, newest first, older than ``before`` (created at,
        id), with their tickets; and whether more follow."""
        ...

    async def known(self, order_ids: Sequence[str]) -> set[str]:
        """Those of these ids that are committed orders."""
        ...

    async def tickets(self, member_id: int, limit: int) -> list[TicketView]:
        """The member's tickets with their orders' journeys, newest first."""
        ...


class OrderViewCache(Protocol):
    """Compact views of committed orders and of a member's lists, kept beside their generations
    (Redis in distributed mode, process memory when embedded); see ``booking.view_cache`` for the
    invariant the generations keep.

    A generation is an int: 0 while nothing changed since the entry could first be read, and None
    when the cache could not be asked (then nothing is filled and nothing is assumed)."""

    async def order(self, order_id: str) -> tuple[str | None, int | None]:
        """The cached view of the order (or None) and the order's generation, in one round trip."""
        ...

    async def keep_order(self, order_id: str, generation: int, view: str) -> None:
        """Cache the view, unless the order's generation moved past ``generation`` meanwhile."""
        ...

    async def member_entry(self, member_id: int, name: str) -> tuple[str | None, int | None]:
        """A cached entry of the member (a list page, the account) and the member's generation."""
        ...

    async def keep_member_entry(self, member_id: int, name: str, generation: int, value: str) -> None:
        """Cache the entry, unless the member's generation moved past ``generation`` meanwhile."""
        ...

    async def forget(self, order_ids: Sequence[str], member_ids: Sequence[int]) -> None:
        """A change of these orders (and of these members' entries) committed: move their generations
        on, then drop their cached entries."""
        ...

    async def written(self, views: Sequence[tuple[str, str]], member_ids: Sequence[int]) -> None:
        """The committer wrote these orders, each given with its view as written (``encode_order``):
        each order's generation moves on, as ``forget`` moves it, and when that is its first move
        (nothing has changed the order since it was written) its view is kept, so the member's next
        read needs no database; the members' entries are forgotten."""
        ...
