"""Interfaces the services depend on; adapters (Redis, in-process) implement them.

The composition root (``railbook.bootstrap``) picks the concrete adapters.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from railbook.domain.seating import AllocationRequest, Seat, SeatAssignment


@dataclass(frozen=True, slots=True)
class DayLayout:
    """Everything an allocator needs to hold a train-day: stops and the seats of every class,
    plus the segment masks already sold (from the system of record), per class, by seat index."""

    train_code: str
    date: dt.date
    n_stops: int
    seats: Mapping[str, Sequence[Seat]]
    masks: Mapping[str, Sequence[int]]
    # Release ids (``cancel:<order>``, ``refund:<ticket>``, ...) whose seats these masks already show
    # free: installing the layout marks them done, so a late retry of one changes nothing.
    released: Sequence[str] = ()


@dataclass(frozen=True, slots=True)
class DayCounts:
    """What a train-day has left for every station pair, read at one moment, so one read answers
    every pair a search asks about until it is too old.

    ``reach[c][a][y]`` counts the seats of class ``c`` whose maximal free run starts at stop ``a``
    and reaches stop ``y`` or beyond (0 for ``y <= a``): a journey ``x→y`` fits a seat iff one run
    contains it, so the seats free for it are ``Σ reach[c][a][y]`` over ``a ≤ x``.
    """

    n_stops: int
    reach: Mapping[str, Sequence[Sequence[int]]]

    def remaining(self, from_index: int, to_index: int) -> dict[str, int]:
        """Seats free for the whole journey, per seat class."""
        return {c: sum(rows[a][to_index] for a in range(from_index + 1)) for c, rows in self.reach.items()}


@dataclass(frozen=True, slots=True)
class HeldSeat:
    """A seat to give back: its class and index within the class."""

    seat_class: str
    seat_index: int


@dataclass(frozen=True, slots=True)
class SeatHold:
    """Segments ``from_index..to_index-1`` of one seat that the system of record holds for a ticket, to
    mark held in the allocator unless one of ``release_ids`` (the releases that would free that
    ticket's seat) has already been applied there."""

    seat_class: str
    seat_index: int
    from_index: int
    to_index: int
    release_ids: tuple[str, ...] = ()


class Allocation(list[SeatAssignment]):
    """The seats of one order (a list, as before), and the load epoch of the train-day they were
    allocated under: the order's message carries the same epoch (field ``epoch``)."""

    epoch: str

    def __init__(self, seats: Sequence[SeatAssignment] = (), epoch: str = "") -> None:
        super().__init__(seats)
        self.epoch = epoch


# Idempotency-Keys are kept at least 24 hours (API.md).
IDEMPOTENCY_TTL_SECONDS = 26 * 3600


@dataclass(frozen=True, slots=True)
class KeptKey:
    """An order's Idempotency-Key as the system of record keeps it. Every fill of the shared cache of
    a member's passengers restores the member's keys first, so a cache that knows the passengers
    knows the keys too (a keyed order whose passengers it knows needs no database read)."""

    key: str
    order_id: str
    request_hash: str
    created_at: dt.datetime


def keys_kept_since(now: dt.datetime) -> dt.datetime:
    """The oldest order whose Idempotency-Key is still kept at ``now``."""
    return now - dt.timedelta(seconds=IDEMPOTENCY_TTL_SECONDS)


def kept_claim(order_id: str, request_hash: str) -> str:
    """What an Idempotency-Key holds in the shared cache: the order made with it, its body's digest."""
    return json.dumps({"order_id": order_id, "hash": request_hash})


def kept_seconds(key: KeptKey, now: dt.datetime | None = None) -> int:
    """How much longer ``key`` is kept (0: no longer)."""
    made = key.created_at if key.created_at.tzinfo else key.created_at.replace(tzinfo=dt.UTC)
    left = made + dt.timedelta(seconds=IDEMPOTENCY_TTL_SECONDS) - (now or dt.datetime.now(dt.UTC))
    return max(0, int(left.total_seconds()))


@dataclass(frozen=True, slots=True)
class Admission:
    """An order's admission (sale token, duplicate markers, pending record) prepared by the order
    guard to run in the allocator's own round trip, just before the allocation, which then happens
    only if the order was admitted. ``commands`` and ``scripts`` are in the store's own terms, and
    ``tokens_key`` names the day's sale tokens there. ``conclude`` reads the commands' replies: it
    returns when the order was admitted, else undoes what they set and raises AdmissionRefused."""

    commands: Sequence[tuple[Any, ...]]
    scripts: Sequence[str]
    tokens_key: str
    conclude: Callable[[Sequence[Any]], Awaitable[None]]


class AdmissionRefused(Exception):
    """A prepared admission refused the order; ``reason`` is the refusal to answer with."""

    def __init__(self, reason: Exception) -> None:
        super().__init__(str(reason))
        self.reason = reason


class Allocator(Protocol):
    """Segment inventory of open train-days. Every call is atomic per train-day.

    Invariant kept by every implementation: no seat segment is held twice, and the
    remaining count of every station pair equals the number of seats free for that pair.

    Every load of a train-day stamps a fresh *load epoch* (unique across restarts and wipes). An
    allocation, an order message and a release made under one epoch mean nothing under another:
    the new copy was rebuilt from the system of record and never had them.
    """

    async def load_day(self, layout: DayLayout, *, replace: bool = False) -> bool:
        """Install a train-day; a no-op returning False if it is already loaded (unless replace)."""
        ...

    async def is_loaded(self, train_code: str, date: dt.date) -> bool: ...

    async def allocate(
        self,
        train_code: str,
        date: dt.date,
        request: AllocationRequest,
        *,
        order_id: str,
        message: Mapping[str, str] | None = None,
        admission: Admission | None = None,
    ) -> Allocation:
        """Seat every passenger or nothing. Raises SoldOut, NotFound (day not loaded) or
        InvalidInput (class/letter/seat name/stations). With ``message``, the order message is
        appended to the train-day's order stream in the same atomic step, with the day's load epoch
        added as field ``epoch``. With ``admission`` (prepared by an order guard of the same store),
        the admission runs first in the same round trip and the order is seated only if admitted;
        a refusal raises AdmissionRefused."""
        ...

    async def release(
        self,
        train_code: str,
        date: dt.date,
        from_index: int,
        to_index: int,
        seats: Sequence[HeldSeat],
        *,
        release_id: str,
        expected_epoch: str | None = None,
    ) -> bool:
        """Free those seats for that journey. Idempotent on ``release_id``: a repeat changes
        nothing and returns False. With ``expected_epoch``, a day loaded under another epoch is left
        as it is (returns False): its copy was rebuilt and never held what is being given back."""
        ...

    async def epochs(self, days: Sequence[tuple[str, dt.date]]) -> list[str | None]:
        """The current load epoch of each train-day (``(train_code, date)``) in one round trip; None
        for a day not loaded."""
        ...

    async def hold(
        self, train_code: str, date: dt.date, holds: Sequence[SeatHold], *, expected_epoch: str
    ) -> int:
        """Mark those segments held (a repair: segments already held stay held, nothing is freed),
        skipping a hold whose release was already applied; a no-op returning 0 unless the day is still
        loaded under ``expected_epoch``. Returns how many seats changed."""
        ...

    async def remaining(
        self, train_code: str, date: dt.date, from_index: int, to_index: int
    ) -> dict[str, int]:
        """Seats free for the whole journey, per seat class."""
        ...

    async def count_tables(self, days: Sequence[tuple[str, dt.date]]) -> list[DayCounts | None]:
        """Counts of several train-days (``(train_code, date)``) in one round trip; None for a day
        not loaded. Each day is read atomically per seat class."""
        ...

    async def masks(self, train_code: str, date: dt.date) -> dict[str, list[int]]:
        """Current sold-segment mask of every seat, per class (for seat maps and audits)."""
        ...

    async def drop_day(self, train_code: str, date: dt.date) -> None: ...


class SearchChanges(Protocol):
    """Tells search that what train-days have left changed (an order committed or failed, a
    cancellation, a refund, a change), so that no count search cached for them outlives the change."""

    async def train_days_changed(self, days: Iterable[tuple[str, dt.date]]) -> None: ...
