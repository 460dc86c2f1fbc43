"""Seat maps: every seat of a class on a train-day, free or not for a journey.

Which seats are sold comes from the allocator's masks (from the active tickets, marked stale, while
Redis is unreachable); where each seat is comes from ``daily_seat``, frozen per day and kept in
process. A train-day the directory and the Bloom filter both say is not open answers 404 without a
database read.
"""

from __future__ import annotations

import datetime as dt
from collections import OrderedDict, defaultdict
from collections.abc import Callable, MutableMapping, Sequence

from railbook.config import Settings
from railbook.domain.bloom import train_day_key
from railbook.domain.errors import BadJourney, NotFound, SeatClassNotOnTrain, StationNotOnTrain, TrainNotFound
from railbook.domain.order_state import ACTIVE_TICKET_STATUSES
from railbook.domain.seating import journey_mask, seat_name
from railbook.domain.timetable import boarding_date, service_dates_for
from railbook.kit.caching import SingleFlight
from railbook.services.ports import Allocator
from railbook.services.sales.window import check_on_sale
from railbook.services.search.answers import SeatCell, SeatMapAnswer
from railbook.services.search.counts import RemainingCounts
from railbook.services.search.directory import StationDirectory
from railbook.services.search.outage import SharedStoreGuard, Skipped
from railbook.services.search.ports import DayInfo, RouteStore, SeatPlace, SeatStore, StationRef

MAX_DAYS = 2048
MAX_LAYOUTS = 512


class SeatMaps:
    """Seat maps of one process, with its train-days and seat layouts kept in memory."""

    def __init__(
        self,
        *,
        settings: Settings,
        allocator: Allocator,
        routes: RouteStore,
        seats: SeatStore,
        guard: SharedStoreGuard,
        directory: StationDirectory,
        counts: RemainingCounts,
        flights: SingleFlight,
        stats: MutableMapping[str, int],
        clock: Callable[[], float],
        day_ttl_seconds: float,
    ) -> None:
        self.settings = settings
        self.allocator = allocator
        self.routes = routes
        self.seats = seats
        self.guard = guard
        self.directory = directory
        self.counts = counts
        self.flights = flights
        self.stats = stats
        self.clock = clock
        self.day_ttl_seconds = day_ttl_seconds
        self._days: OrderedDict[tuple[str, dt.date], tuple[float, DayInfo]] = OrderedDict()
        self._layouts: OrderedDict[tuple[int, str], list[SeatPlace]] = OrderedDict()

    def forget_days(self) -> None:
        """Drop the train-days kept in memory (stations or days changed)."""
        self._days.clear()

    async def seat_map(
        self, train_code: str, date: dt.date, from_term: str, to_term: str, seat_class: str
    ) -> SeatMapAnswer:
        """Every seat of a class on the train that leaves ``from`` on the boarding date ``date``, free or
        not for the journey from → to."""
        check_on_sale(self.settings, [date])
        from_refs, to_refs = await self.directory.resolve([(from_term, "from"), (to_term, "to")])
        day, fi = await self._boarded(train_code, date, from_refs)
        date = day.date or date
        ti = _stop_of(day, to_refs, "to", first=False)
        if fi >= ti:
            raise BadJourney(
                f"{day.stops[fi][1]} does not come before {day.stops[ti][1]} on {train_code}.",
                details={"from": from_term, "to": to_term},
            )
        if seat_class not in day.classes:
            raise SeatClassNotOnTrain(
                f"{train_code} has no {seat_class} seats.",
                details={"field": "seat_class", "classes": sorted(day.classes)},
            )
        layout = await self._layout(day.daily_train_id, seat_class)
        masks, stale = await self._masks(day, date, seat_class)
        journey = journey_mask(fi, ti)
        carriages: dict[int, dict[int, list[SeatCell]]] = defaultdict(lambda: defaultdict(list))
        for index, carriage, row, letter in layout:
            mask = masks[index] if index < len(masks) else 0
            carriages[carriage][row].append(SeatCell(seat_name(carriage, row, letter), mask & journey == 0))
        return SeatMapAnswer(
            [(c, [(r, cells) for r, cells in sorted(rows.items())]) for c, rows in sorted(carriages.items())],
            stale,
        )

    async def _boarded(
        self, train_code: str, boarding: dt.date, from_refs: Sequence[StationRef]
    ) -> tuple[DayInfo, int]:
        """The train-day that leaves ``from`` on ``boarding`` and the stop index of ``from``: the one of
        that service date when the train leaves ``from`` on its first day, else the one that left its
        origin as many days before as ``from`` is reached after (open days only, known in memory)."""
        open_days = (await self.directory.current()).train_days
        first: DayInfo | None = None
        for service in service_dates_for(boarding):
            if service != boarding and (train_code, service) not in open_days:
                continue
            try:
                day = await self._train_day(train_code, service)
            except NotFound:
                if service == boarding:
                    continue
                raise
            first = first or day
            fi = _stop_of(day, from_refs, "from", first=True)
            if not day.departure_days or boarding_date(service, day.departure_days[fi]) == boarding:
                return day, fi
        if first is None:
            raise _train_not_found(train_code, boarding)
        fi = _stop_of(first, from_refs, "from", first=True)
        raise TrainNotFound(
            f"{train_code} does not leave {first.stops[fi][1]} on {boarding.isoformat()}.",
            details={"train_code": train_code, "date": boarding.isoformat(), "from": first.stops[fi][1]},
        )

    async def _train_day(self, train_code: str, date: dt.date) -> DayInfo:
        """A train-day's stops and classes; 404 TRAIN_NOT_FOUND without a database read when the
        directory and the Bloom filter both say it is not open."""
        cached = self._days.get((train_code, date))
        if cached is not None and cached[0] > self.clock():
            return cached[1]
        directory = await self.directory.current()
        if (train_code, date) not in directory.train_days:
            (maybe,) = await self.directory.bloom_maybe([train_day_key(train_code, date.isoformat())])
            if not maybe and not await self.directory.probe_since(self.clock()):
                self.stats["bloom_rejected"] += 1
                raise _train_not_found(train_code, date)
        info = await self.flights.run(
            f"day:{train_code}:{date}", lambda: self.routes.train_day(train_code, date)
        )
        if info is None:
            raise _train_not_found(train_code, date)
        self._days[(train_code, date)] = (self.clock() + self.day_ttl_seconds, info)
        while len(self._days) > MAX_DAYS:
            self._days.popitem(last=False)
        return info

    async def _layout(self, daily_train_id: int, seat_class: str) -> list[SeatPlace]:
        """(seat_index, carriage, row, letter) of a class (frozen per day, so kept once read)."""
        key = (daily_train_id, seat_class)
        layout = self._layouts.get(key)
        if layout is not None:
            return layout
        layout = await self.flights.run(
            f"layout:{daily_train_id}:{seat_class}",
            lambda: self.seats.seat_layout(daily_train_id, seat_class),
        )
        self._layouts[key] = layout
        while len(self._layouts) > MAX_LAYOUTS:
            self._layouts.popitem(last=False)
        return layout

    async def _masks(self, day: DayInfo, date: dt.date, seat_class: str) -> tuple[list[int], bool]:
        """The class's sold masks by seat index, and whether they came from the database (stale)."""
        for attempt in range(2):
            try:
                result = await self.guard.call(lambda: self.allocator.masks(day.train_code, date))
            except NotFound:
                if attempt or not await self.counts.ensure_loaded(day.train_code, date):
                    break
                continue
            if not isinstance(result, Skipped):
                return list(result.get(seat_class, [])), False
            break
        sold = await self.seats.sold_masks(day.daily_train_id, sorted(ACTIVE_TICKET_STATUSES))
        by_seat = sold.get(seat_class, {})
        layout = await self._layout(day.daily_train_id, seat_class)
        return [by_seat.get(index, 0) for index, *_ in layout], True


def _stop_of(day: DayInfo, refs: Sequence[StationRef], field_name: str, *, first: bool) -> int:
    ids = {r.id for r in refs}
    indexes = [i for i, (station_id, _) in enumerate(day.stops) if station_id in ids]
    if not indexes:
        raise StationNotOnTrain(
            f"{refs[0].name} is not a stop of {day.train_code}.",
            details={"field": field_name, "station": refs[0].name},
        )
    return indexes[0] if first else indexes[-1]


def _train_not_found(train_code: str, date: dt.date) -> NotFound:
    return TrainNotFound(
        f"{train_code} does not run on {date.isoformat()} (or is not on sale).",
        details={"train_code": train_code, "date": date.isoformat()},
    )
