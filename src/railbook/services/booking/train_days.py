"""Train-day metadata for the accept path, cached in process and loaded through ``AcceptReads``, and
the mapping of a passenger's boarding date to the train-day (service date) it books."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from railbook.domain.errors import BadJourney, DateNotOnSale, StationNotFound, TrainDeparted, TrainNotFound
from railbook.domain.sale import Trip, sale_closed, train_day_name
from railbook.domain.timetable import BOARDING_LAG_DAYS, boarding_date, service_dates_for
from railbook.domain.timetable import service_date as service_date_of
from railbook.kit.clock import beijing_today, utcnow
from railbook.services.booking.ports import TrainDay

if TYPE_CHECKING:
    from railbook.services.booking.context import OrderContext

TRAIN_DAY_TTL_SECONDS = 60.0
MISSING_TRAIN_DAY_TTL_SECONDS = 1.0


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
        """The cached day, or ``load()``'s answer shared by every caller waiting for it."""
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


async def train_day(
    container: OrderContext, train_code: str, date: dt.date, *, today: dt.date | None = None
) -> TrainDay:
    """The opened train-day, or DATE_NOT_ON_SALE / TRAIN_NOT_FOUND; ``today`` (default: today in
    Beijing) is the first day of the sale window."""
    settings = container.settings
    today = today or beijing_today()
    if date < today or date > today + dt.timedelta(days=settings.sale_days_ahead):
        raise DateNotOnSale(f"{date} is not on sale.", details={"date": str(date)})
    reads = container.accept_reads

    async def load() -> TrainDay | None:
        return await reads.train_day(train_code, date)

    day = await container.train_days.get((train_code, date), load)
    if day is not None:
        return day
    if not await reads.train_exists(train_code):
        raise TrainNotFound(f"No train {train_code}.", details={"train_code": train_code})
    raise DateNotOnSale(
        f"{train_code} on {date} is not on sale.",
        details={"date": str(date), "train_code": train_code},
    )


async def boarded_train_day(
    container: OrderContext,
    train_code: str,
    boarding: dt.date,
    from_station: str,
    *,
    service_date: dt.date | None = None,
    today: dt.date | None = None,
) -> TrainDay:
    """The opened train-day a passenger boarding at ``from_station`` on ``boarding`` travels on.

    A date a passenger types is a boarding date (12306): the day the train leaves ``from``. A train
    that leaves its origin on D−1 and reaches ``from`` after midnight is booked under D, so the day
    booked is the one whose service date plus the departure day of ``from`` is ``boarding``. The sale
    window applies to that service day: it must be open (opened days end ``SALE_DAYS_AHEAD`` ahead),
    and ``boarding`` not gone by. ``service_date`` (a waitlist entry, which keeps the day it was for)
    names the train-day directly. ``today`` (default: today in Beijing) is the first day of the sale
    window. Cost on the common path (``from`` left on the service date): the one cached lookup of
    ``train_day``; an overnight boarding costs a second one."""
    if service_date is not None:
        return await train_day(container, train_code, service_date, today=today)
    today = today or beijing_today()
    last = today + dt.timedelta(days=container.settings.sale_days_ahead)
    if boarding < today or boarding > last + dt.timedelta(days=BOARDING_LAG_DAYS):
        raise DateNotOnSale(f"{boarding} is not on sale.", details={"date": str(boarding)})
    reads = container.accept_reads

    async def load(date: dt.date) -> TrainDay | None:
        return await container.train_days.get((train_code, date), lambda: reads.train_day(train_code, date))

    same = await load(boarding) if boarding <= last else None
    if same is not None:
        days_after = _departure_day(same, from_station)
        if days_after is None or days_after == 0:
            return same  # journey_on names a station the train does not stop at
        earlier = await load(service_date_of(boarding, days_after))
        if earlier is not None and _departure_day(earlier, from_station) == days_after:
            return _in_window(earlier, last)
    for date in await reads.open_dates(train_code, service_dates_for(boarding)[1:]):
        day = await load(date)
        days_after = None if day is None else _departure_day(day, from_station)
        if day is not None and days_after is not None and boarding_date(date, days_after) == boarding:
            return _in_window(day, last)
    if same is None and not await reads.train_exists(train_code):
        raise TrainNotFound(f"No train {train_code}.", details={"train_code": train_code})
    raise DateNotOnSale(
        f"{train_code} does not leave {from_station} on {boarding} (or is not on sale).",
        details={"date": str(boarding), "train_code": train_code, "from": from_station},
    )


def _departure_day(day: TrainDay, station: str) -> int | None:
    """Days after the service date the train leaves ``station`` (None: not a stop of it)."""
    index = day.index_of.get(station.strip())
    if index is None:
        return None
    return day.departure_days[index] if index < len(day.departure_days) else 0


def _in_window(day: TrainDay, last: dt.date) -> TrainDay:
    if day.date > last:
        raise DateNotOnSale(
            f"{day.train_code} on {day.date} is not on sale.", details={"date": str(day.date)}
        )
    return day


def journey_on(day: TrainDay, from_station: str, to_station: str) -> tuple[int, int]:
    """The stop indexes ``(i, j)`` of a journey on this train-day: STATION_NOT_FOUND for a station the
    train does not stop at, BAD_JOURNEY unless ``from`` comes before ``to``."""
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


def refuse_if_departed(day: TrainDay, i: int, cutoff_minutes: int, now: dt.datetime | None = None) -> None:
    """TRAIN_DEPARTED once online sale of a journey boarding at stop ``i`` has closed (the train
    leaves within ``cutoff_minutes`` or has left); from the cached day, no store asked."""
    departs = day.departs_at[i] if i < len(day.departs_at) else None
    if departs is None:
        return
    if sale_closed(departs, now or utcnow(), cutoff_minutes):
        raise TrainDeparted(
            f"Sale of {day.train_code} from {day.station_names[i]} has closed: the train leaves at "
            f"{departs:%Y-%m-%d %H:%M} (Beijing time) and online sale stops {cutoff_minutes} minutes before.",
            details={"departs_at": departs.isoformat(), "cutoff_minutes": cutoff_minutes},
        )


def trip_on(day: TrainDay, i: int, j: int) -> Trip:
    """The time a journey i→j on this train-day occupies its passenger: boarding to arrival."""
    starts = day.departs_at[i] if i < len(day.departs_at) else None
    ends = day.arrives_at[j] if j < len(day.arrives_at) else None
    begin = int(starts.timestamp()) if starts is not None else 0
    end = int(ends.timestamp()) if ends is not None else begin
    return Trip(train_day_name(day.train_code, day.date), begin, max(begin, end))
