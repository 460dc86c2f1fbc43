"""The in-process allocator of the embedded mode: the domain model behind the ``Allocator`` port.

It answers exactly as :class:`railbook.domain.inventory.DayInventory` does (that is the model), so
it matches the Redis allocator seat for seat; property tests check all three together.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence

from railbook.domain.errors import DayNotLoaded
from railbook.domain.inventory import DayInventory, check_journey_static, check_request
from railbook.domain.seating import AllocationRequest, SeatAssignment
from railbook.services.ports import Admission, Allocation, DayCounts, DayLayout, HeldSeat, SeatHold

OnMessage = Callable[[str, dt.date, dict[str, str]], Awaitable[None]]
DayKey = tuple[str, dt.date]
RELEASE_MARKER_TTL_S = 4 * 86400


def assignments_json(assignments: Sequence[SeatAssignment]) -> str:
    """The ``seats`` field of an order message: the same bytes the Redis script writes."""
    return json.dumps(
        [
            {
                "position": a.position,
                "seat_class": a.seat_class,
                "seat_index": a.seat_index,
                "seat_name": a.seat_name,
            }
            for a in sorted(assignments, key=lambda a: a.position)
        ],
        separators=(",", ":"),
    )


class InProcessAllocator:
    """``Allocator`` for one process: a ``DayInventory`` and an ``asyncio.Lock`` per train-day.

    Invariant the lock keeps: for a train-day, an allocation and the hand-over of its message to
    ``on_message`` happen as one step, in allocation order — no other allocate, release, load or
    drop of that day interleaves at the ``await`` of the callback. If the callback raises, the
    seats are given back before the error propagates, so a reservation never exists without its
    message (the guarantee the Redis script gives with its XADD). The domain calls themselves never
    await, so without a callback the lock is uncontended. One event loop only: not thread-safe.
    """

    def __init__(
        self,
        *,
        on_message: OnMessage | None = None,
        release_ttl_s: float = RELEASE_MARKER_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._on_message = on_message
        self._release_ttl_s = release_ttl_s
        self._clock = clock
        self._days: dict[DayKey, DayInventory] = {}
        self._epochs: dict[DayKey, str] = {}
        self._locks: dict[DayKey, asyncio.Lock] = {}
        self._released: dict[tuple[DayKey, str], float] = {}

    def _lock(self, key: DayKey) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    def _day(self, key: DayKey) -> DayInventory:
        try:
            return self._days[key]
        except KeyError:
            raise DayNotLoaded("train-day not loaded") from None

    async def load_day(self, layout: DayLayout, *, replace: bool = False) -> bool:
        key = (layout.train_code, layout.date)
        async with self._lock(key):
            if key in self._days and not replace:
                return False
            self._days[key] = DayInventory.from_masks(layout.n_stops, layout.seats, layout.masks)
            # A fresh epoch, and the releases these masks already reflect marked done (see load_day.lua).
            self._epochs[key] = uuid.uuid4().hex[:16]
            until = self._clock() + self._release_ttl_s
            for release_id in layout.released:
                self._released[(key, release_id)] = until
            return True

    async def is_loaded(self, train_code: str, date: dt.date) -> bool:
        return (train_code, date) in self._days

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
        """Seat the order (all or nothing) and hand its message over, as one step per train-day.
        There is no round trip to share: the embedded guard admits apart and prepares no admission."""
        if admission is not None:
            raise ValueError("the in-process allocator takes no prepared admission")
        check_request(request)  # same order of checks as the Redis adapter: stateless ones first
        key = (train_code, date)
        async with self._lock(key):
            day = self._day(key)
            epoch = self._epochs[key]
            seats = day.allocate(request)
            if message is not None and self._on_message is not None:
                body = {**message, "order_id": order_id, "seats": assignments_json(seats), "epoch": epoch}
                try:
                    await self._on_message(train_code, date, body)
                except BaseException:
                    day.release(
                        request.from_index, request.to_index, [(a.seat_class, a.seat_index) for a in seats]
                    )
                    raise
            return Allocation(seats, epoch)

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
        """Free those seats' journey once per ``release_id`` (marker kept ``release_ttl_s``); a day
        loaded under another epoch than ``expected_epoch`` (when given) is left alone."""
        check_journey_static(from_index, to_index)
        key = (train_code, date)
        async with self._lock(key):
            now = self._clock()
            marker = (key, release_id)
            if self._released.get(marker, now) > now:
                return False
            if expected_epoch is not None and self._epochs.get(key, "") != expected_epoch:
                return False
            day = self._day(key)
            day.release(from_index, to_index, [(s.seat_class, s.seat_index) for s in seats])
            self._prune(now)
            self._released[marker] = now + self._release_ttl_s
            return True

    async def epochs(self, days: Sequence[tuple[str, dt.date]]) -> list[str | None]:
        return [self._epochs.get(key) if key in self._days else None for key in days]

    async def hold(
        self, train_code: str, date: dt.date, holds: Sequence[SeatHold], *, expected_epoch: str
    ) -> int:
        """Mark the holds' segments held, never freeing any (see hold.lua for the rules)."""
        key = (train_code, date)
        async with self._lock(key):
            day = self._days.get(key)
            if day is None or self._epochs.get(key) != expected_epoch:
                return 0
            now = self._clock()
            changed: set[tuple[str, int]] = set()
            for h in holds:
                check_journey_static(h.from_index, h.to_index)
                if any(self._released.get((key, r), now) > now for r in h.release_ids):
                    continue
                inv = day.classes.get(h.seat_class)
                if inv is None or not 0 <= h.seat_index < len(inv.masks) or h.to_index >= day.n_stops:
                    continue
                if inv.hold(h.seat_index, h.from_index, h.to_index):
                    changed.add((h.seat_class, h.seat_index))
            return len(changed)

    def _prune(self, now: float) -> None:
        if len(self._released) > 10_000:
            self._released = {k: t for k, t in self._released.items() if t > now}

    async def remaining(
        self, train_code: str, date: dt.date, from_index: int, to_index: int
    ) -> dict[str, int]:
        check_journey_static(from_index, to_index)
        return self._day((train_code, date)).remaining(from_index, to_index)

    async def count_tables(self, days: Sequence[tuple[str, dt.date]]) -> list[DayCounts | None]:
        """Counts of each day from its run tables (suffix sums of every run row); None if not loaded."""
        out: list[DayCounts | None] = []
        for key in days:
            day = self._days.get(key)
            if day is None:
                out.append(None)
                continue
            n = day.n_stops
            reach: dict[str, list[list[int]]] = {}
            for c, inv in day.classes.items():
                rows = []
                for a in range(n):
                    row = [0] * n
                    acc = 0
                    for y in range(n - 1, a, -1):
                        acc += inv.runs[a][y]
                        row[y] = acc
                    rows.append(row)
                reach[c] = rows
            out.append(DayCounts(n, reach))
        return out

    async def masks(self, train_code: str, date: dt.date) -> dict[str, list[int]]:
        return self._day((train_code, date)).masks()

    async def drop_day(self, train_code: str, date: dt.date) -> None:
        key = (train_code, date)
        async with self._lock(key):
            self._days.pop(key, None)
            self._epochs.pop(key, None)
