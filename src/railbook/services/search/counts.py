"""Remaining counts: what each leg of an answer has left per seat class.

From a per-train-day snapshot of the allocator's run tables (``count_tables``: one pipelined round
trip for every train-day of an answer that lacks a fresh one), shared by every station pair on that
train; a snapshot is used for at most ``hot_seconds`` after it was read, so counts lag the allocator
by at most ``hot_seconds`` plus the orders in flight. A commit, cancellation, refund or change of a
train-day drops its snapshot at once (``forget``) and counts a change of the day, and an answer stamped
with an older count of changes is not served again: once the queue has drained, search is exact.
While Redis is unreachable the counts come from the active tickets (the system of record) and the
answer is marked stale.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import OrderedDict, defaultdict
from collections.abc import Awaitable, Callable, Iterable, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from railbook.domain.order_state import ACTIVE_TICKET_STATUSES
from railbook.domain.seating import journey_mask
from railbook.kit.caching import SingleFlight
from railbook.services.ports import Allocator, DayCounts
from railbook.services.search.outage import SKIPPED, SharedStoreGuard, Skipped
from railbook.services.search.ports import SeatStore

DayKey = tuple[str, dt.date]
Leg = dict[str, Any]


def leg_day(leg: Leg) -> DayKey:
    """The train-day of a route-index leg: its train code and service date."""
    return leg["code"], dt.date.fromisoformat(leg["sd"])


@dataclass(slots=True)
class DayTable:
    """A train-day's counts as read at ``read_at``, with the pairs already summed from it."""

    read_at: float
    counts: DayCounts
    pairs: dict[tuple[int, int], dict[str, int]] = field(default_factory=dict)

    def remaining(self, from_index: int, to_index: int) -> dict[str, int]:
        """Seats free for the journey, per class (summed once per pair and snapshot)."""
        pair = (from_index, to_index)
        found = self.pairs.get(pair)
        if found is None:
            found = self.pairs[pair] = self.counts.remaining(from_index, to_index)
        return found


TableRead = tuple[float, DayTable | Skipped | None]


class RemainingCounts:
    """Count snapshots per train-day, read from the allocator through the outage guard."""

    def __init__(
        self,
        *,
        allocator: Allocator,
        seats: SeatStore,
        guard: SharedStoreGuard,
        flights: SingleFlight,
        load_day: Callable[[str, dt.date], Awaitable[bool]],
        stats: MutableMapping[str, int],
        clock: Callable[[], float],
        hot_seconds: float,
        max_entries: int,
    ) -> None:
        self.allocator = allocator
        self.seats = seats
        self.guard = guard
        self.flights = flights
        self.load_day = load_day
        self.stats = stats
        self.clock = clock
        self.hot_seconds = hot_seconds
        self.max_entries = max_entries
        self._tables: OrderedDict[DayKey, DayTable] = OrderedDict()
        self._reads: dict[DayKey, asyncio.Future[dict[DayKey, TableRead]]] = {}
        self._changes: dict[DayKey, int] = {}  # changes of each train-day seen so far (``forget``)

    def forget(self, days: Iterable[DayKey]) -> None:
        """These train-days changed: drop their snapshots, let the next request read them afresh
        rather than join a read already under way, and count the change."""
        for key in days:
            self._tables.pop(key, None)
            self._reads.pop(key, None)
            self._changes[key] = self._changes.get(key, 0) + 1
        if len(self._changes) > 4 * self.max_entries:
            self._changes.clear()  # a stamp then reads as changed once: one rebuild, never a stale hit

    def known_days(self) -> list[DayKey]:
        """Every train-day with a snapshot kept or a read under way."""
        return list(dict.fromkeys([*self._tables, *self._reads]))

    def stamp(self, legs: Sequence[Leg]) -> tuple[tuple[DayKey, int], ...]:
        """The change count of each train-day of ``legs``, to take before reading their counts."""
        keys = dict.fromkeys(leg_day(leg) for leg in legs)
        return tuple((key, self._changes.get(key, 0)) for key in keys)

    def unchanged(self, stamp: Sequence[tuple[DayKey, int]]) -> bool:
        """Whether no train-day of ``stamp`` changed since it was taken."""
        changes = self._changes
        return all(changes.get(key, 0) == n for key, n in stamp)

    async def for_legs(self, legs: Sequence[Leg]) -> tuple[list[dict[str, int]], bool, float | None]:
        """Remaining per class for each leg, from the train-days' count snapshots (from the database
        when Redis is down), whether any came from the database, and when the oldest snapshot used
        was read (None if none was used)."""
        keys = list(dict.fromkeys(leg_day(leg) for leg in legs))
        reads = await self._day_tables(keys)
        lost = [k for k, (_, table) in reads.items() if table is None]
        if lost:
            reloaded = [k for k in lost if await self.ensure_loaded(*k)]
            if reloaded:
                reads.update(await self._read_tables(reloaded))
        counts: list[dict[str, int]] = []
        fallback: list[int] = []
        oldest: float | None = None
        for i, leg in enumerate(legs):
            read_at, table = reads[leg_day(leg)]
            if isinstance(table, DayTable) and leg["ti"] < table.counts.n_stops:
                counts.append(table.remaining(leg["fi"], leg["ti"]))
                oldest = read_at if oldest is None else min(oldest, read_at)
            else:
                counts.append({})
                fallback.append(i)
        if fallback:
            self.stats["db_counts"] += 1
            from_db = await self._db_remaining([legs[i] for i in fallback])
            for i, remaining in zip(fallback, from_db, strict=True):
                counts[i] = remaining
        return counts, bool(fallback), oldest

    async def _day_tables(self, keys: Sequence[DayKey]) -> dict[DayKey, TableRead]:
        """Each train-day's counts no older than ``hot_seconds``: fresh snapshots from memory, the
        rest in one read shared with any read of the same day already under way (single flight)."""
        now = self.clock()
        found: dict[DayKey, TableRead] = {}
        waiting: dict[DayKey, asyncio.Future[dict[DayKey, TableRead]]] = {}
        missing: list[DayKey] = []
        for key in keys:
            table = self._tables.get(key)
            if table is not None and table.read_at + self.hot_seconds > now:
                found[key] = (table.read_at, table)
            elif key in self._reads:
                waiting[key] = self._reads[key]
            else:
                missing.append(key)
        if missing:
            read = asyncio.ensure_future(self._read_tables(missing))
            for key in missing:
                self._reads[key] = waiting[key] = read
            read.add_done_callback(lambda t, ks=missing: self._forget_reads(ks, t))  # type: ignore[misc]
        for key, future in waiting.items():
            found[key] = (await asyncio.shield(future))[key]
        return found

    def _forget_reads(self, keys: Sequence[DayKey], read: asyncio.Future[Any]) -> None:
        for key in keys:
            if self._reads.get(key) is read:
                del self._reads[key]
        if not read.cancelled():
            read.exception()  # retrieved here; every waiter still gets it raised

    async def _read_tables(self, keys: Sequence[DayKey]) -> dict[DayKey, TableRead]:
        """One round trip for the counts of ``keys``; None for a day the allocator lacks, SKIPPED
        for all of them when Redis is unreachable."""
        read_at = self.clock()  # before the read: the snapshot is at least this fresh
        changes = [self._changes.get(key, 0) for key in keys]
        self.stats["count_reads"] += 1
        result = await self.guard.call(lambda: self.allocator.count_tables(keys))
        if isinstance(result, Skipped):
            return {key: (read_at, SKIPPED) for key in keys}
        out: dict[DayKey, TableRead] = {}
        for key, counts, seen in zip(keys, result, changes, strict=True):
            if counts is not None and self._changes.get(key, 0) != seen:
                # The day changed during the read: answer the askers, keep nothing for later ones.
                out[key] = (read_at, DayTable(read_at, counts))
                continue
            if counts is None:
                self._tables.pop(key, None)
                out[key] = (read_at, None)
                continue
            old = self._tables.get(key)
            if old is not None and old.counts == counts:
                # Nothing sold or released since the last read: the sums already made still hold.
                table = self._tables[key] = DayTable(read_at, old.counts, old.pairs)
            else:
                table = self._tables[key] = DayTable(read_at, counts)
            self._tables.move_to_end(key)
            out[key] = (read_at, table)
        while len(self._tables) > self.max_entries:
            self._tables.popitem(last=False)
        return out

    async def ensure_loaded(self, code: str, date: dt.date) -> bool:
        """Put a train-day the allocator lost back (e.g. after a Redis restart); one loader per day."""
        if self.guard.cache.distributed and not self.guard.closed:
            return False
        try:
            return await self.flights.run(f"load:{code}:{date}", lambda: self.load_day(code, date))
        except Exception as exc:
            if not self.guard.is_outage(exc):
                raise
            self.guard.breaker.failure()
            return False

    async def _db_remaining(self, legs: Sequence[Leg]) -> list[dict[str, int]]:
        """Seats free per leg and class from the active tickets (the admin inventory's arithmetic)."""
        ids = sorted({leg["id"] for leg in legs})
        seats, tickets = await self.seats.seats_and_tickets(ids, sorted(ACTIVE_TICKET_STATUSES))
        result = []
        for leg in legs:
            journey = journey_mask(leg["fi"], leg["ti"])
            taken: dict[str, set[int]] = defaultdict(set)
            for t in tickets:
                if t.daily_train_id == leg["id"] and journey_mask(t.from_index, t.to_index) & journey:
                    taken[t.seat_class].add(t.daily_seat_id)
            result.append(
                {cls: n - len(taken[cls]) for (train_id, cls), n in seats.items() if train_id == leg["id"]}
            )
        return result
