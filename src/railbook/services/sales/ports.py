"""What the sale-day use cases need: the stores of timetable copies and open train-days, and the
allocator's drained-day extension."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from railbook.config import Settings
from railbook.domain.seating import CarriageSpec
from railbook.services.ports import Allocator, DayLayout


@dataclass(slots=True)
class TimetableTrain:
    """One train of the timetable as it will be frozen into a day: stops, carriages and fares."""

    train_id: int
    code: str
    kind: str
    stops: list[dict[str, Any]] = field(default_factory=list)
    carriages: list[CarriageSpec] = field(default_factory=list)
    # seat class -> (from stop, to stop) -> fare in fen
    fares: dict[str, dict[tuple[int, int], int]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TrainDay:
    """An open train-day as the system of record lists it."""

    daily_train_id: int
    train_code: str
    date: dt.date
    n_stops: int


@dataclass(frozen=True, slots=True)
class DayRecord:
    """A train-day's layout and the releases not confirmed yet, read in one database snapshot."""

    layout: DayLayout
    cancelled_orders: tuple[str, ...]  # CANCEL orders whose seat release is not confirmed yet
    returned_tickets: tuple[tuple[str, str], ...]  # (ticket id, REFUNDED/CHANGED), release unconfirmed


@dataclass(frozen=True, slots=True)
class ActiveTicket:
    """A ticket that holds its seat's segments ``from_index..to_index-1`` (UNPAID or PAID)."""

    ticket_id: str
    order_id: str
    seat_class: str
    seat_index: int
    from_index: int
    to_index: int


@dataclass(frozen=True, slots=True)
class DayHolders:
    """What reconciliation reads of one train-day: its active tickets and, when asked, how many kinds
    of release (cancelled orders, returned tickets) are still unconfirmed."""

    tickets: tuple[ActiveTicket, ...]
    pending_releases: int


class OpeningTransaction(Protocol):
    """The statements of opening one date, all in one transaction."""

    async def open_codes(self, date: dt.date) -> set[str]:
        """Codes of the trains already open on ``date``."""
        ...

    async def insert_days(
        self, trains: Sequence[TimetableTrain], date: dt.date, opened_at: dt.datetime
    ) -> dict[str, int]:
        """Insert the train-days (skipping any a concurrent opener won); code -> daily train id."""
        ...

    async def copy_stops(self, rows: Sequence[dict[str, Any]]) -> None:
        """Insert the frozen stops (daily_train_id, service_date and the stop's fields)."""
        ...

    async def copy_seats(self, daily_train_ids: Sequence[int]) -> None:
        """Copy the seats of the timetable's carriages into the train-days, numbered per class."""
        ...

    async def write_pair_inventory(self, rows: list[tuple[Any, ...]]) -> None:
        """Bulk-write (daily_train_id, seat_class, from, to, remaining, price, refreshed_at) rows."""
        ...


class SaleDayStore(Protocol):
    """The timetable as sale days freeze it, and the opening of dates."""

    async def timetable(self) -> list[TimetableTrain]:
        """Every train with its stops and carriages, by code (fares left empty)."""
        ...

    async def prepare_date(self, date: dt.date) -> int:
        """Make room for a date's records before it opens (on PostgreSQL its partitions, in a short
        transaction of their own); returns how many tables were made. Raises when that fails: a date
        opens only with its partitions."""
        ...

    def opening(self) -> AbstractAsyncContextManager[OpeningTransaction]:
        """One transaction opening one date: commits when the block ends, rolls back on an exception."""
        ...


class DayRecords(Protocol):
    """Open train-days as the system of record holds them: layouts, releases and active tickets."""

    async def open_days(
        self, date: dt.date | None, train_code: str | None, *, from_date: dt.date | None = None
    ) -> list[TrainDay]:
        """The matching open train-days, by date then code."""
        ...

    async def layouts(
        self, date: dt.date | None, train_code: str | None, *, from_date: dt.date | None = None
    ) -> list[DayLayout]:
        """The allocator's view of the matching days, rebuilt from the active tickets."""
        ...

    async def snapshots(self, date: dt.date | None, train_code: str | None) -> list[DayRecord]:
        """The layout and the unconfirmed releases of each matching day, each from one snapshot."""
        ...

    async def confirm_releases(
        self, orders: Sequence[str], tickets: Sequence[str], released_at: dt.datetime
    ) -> None:
        """Stamp ``released_at`` on those cancelled orders and returned tickets still unstamped."""
        ...

    async def inventory(self, train_code: str, date: dt.date) -> tuple[DayLayout, list[str]] | None:
        """A day's layout and its station names in stop order; None if it is not open."""
        ...

    async def holders(self, train_code: str, date: dt.date, *, with_releases: bool) -> DayHolders | None:
        """The day's active tickets (and pending releases when asked); None if it is not open."""
        ...


class MarkerTrust(Protocol):
    async def trust_markers(self, train_code: str, date: dt.date) -> None: ...


class SalesContext(Protocol):
    """What sale-day use cases need from the composition root."""

    settings: Settings
    allocator: Allocator
    # Train-day loads in flight in this process: one load per day at a time.
    day_loads: dict[tuple[str, dt.date], asyncio.Task[bool]]

    @property
    def day_records(self) -> DayRecords: ...


class OpeningContext(SalesContext, Protocol):
    """Opening sale days also tells the order guard that a fresh day's duplicate markers are complete."""

    @property
    def guard(self) -> MarkerTrust: ...

    @property
    def sale_days(self) -> SaleDayStore: ...


@runtime_checkable
class DrainAwareAllocator(Protocol):
    """An allocator that can tell a drained train-day and free drift on it (the Redis allocator)."""

    async def drained_mark(self, train_code: str, date: dt.date) -> str | None: ...

    async def unhold(
        self,
        train_code: str,
        date: dt.date,
        frees: Sequence[tuple[str, int, int]],
        *,
        expected_epoch: str,
        drained_mark: str,
    ) -> int: ...


class ArchiveRefused(Exception):
    """A date cannot be archived yet; ``reasons`` says why, one line each."""

    def __init__(self, reasons: Sequence[str]) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = list(reasons)


class DayArchive(Protocol):
    """Past service dates' records, taken out of the system of record into files (PostgreSQL)."""

    async def dates(self, before: dt.date) -> list[dt.date]:
        """Dates before ``before`` that still have records, oldest first."""
        ...

    async def refusals(self, date: dt.date, today: dt.date) -> list[str]:
        """Why ``date`` cannot be archived yet (empty: it can be)."""
        ...

    async def detach(self, date: dt.date, today: dt.date) -> None:
        """Take the date's records out of reach of the order path; raises ``ArchiveRefused`` (and
        changes nothing) when a refusal shows once nothing can change them any more."""
        ...

    async def export(self, date: dt.date, out: Path) -> dict[str, int]:
        """Write the date's records under ``out``; rows per table."""
        ...

    async def drop(self, date: dt.date) -> None:
        """Remove the date's exported records."""
        ...
