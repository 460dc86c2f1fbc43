"""Train-day metadata for the accept path, cached in process and loaded through ``AcceptReads``."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from railbook.domain.errors import BadJourney, DateNotOnSale, StationNotFound, TrainDeparted, TrainNotFound
from railbook.domain.sale import Trip, sale_closed, train_day_name
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


async def train_day(container: OrderContext, train_code: str, date: dt.date) -> TrainDay:
    """The opened train-day, or DATE_NOT_ON_SALE / TRAIN_NOT_FOUND."""
    settings = container.settings
    today = dt.date.today()
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
    if sale_closed(departs, now or dt.datetime.now(dt.UTC), cutoff_minutes):
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
