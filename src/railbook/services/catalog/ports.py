"""What the catalog use cases need: the store of stations and trains."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from railbook.domain.seating import CarriageSpec
from railbook.domain.timetable import TrainSpec


class RecordConflict(Exception):
    """A uniqueness rule of the store refused a write (a concurrent insert won the race)."""


@dataclass(frozen=True, slots=True)
class StationRecord:
    station_id: int
    name: str
    code: str
    pinyin: str
    city: str


@dataclass(frozen=True, slots=True)
class StopRecord:
    """A stop of a published train, with its station's name and telegraph code."""

    station: str
    station_code: str
    arrives: str | None
    departs: str | None
    day: int
    km: int


@dataclass(frozen=True, slots=True)
class TrainRecord:
    code: str
    kind: str
    stops: tuple[StopRecord, ...]
    carriages: tuple[CarriageSpec, ...]


@dataclass(frozen=True, slots=True)
class TrainSummary:
    code: str
    kind: str
    first: str  # first station's name
    last: str  # last station's name
    stops: int


class TimetableWrite(Protocol):
    """Statements on the timetable, all in one transaction."""

    async def station_taken(self, name: str, code: str) -> bool:
        """Whether a station has this name or this telegraph code."""
        ...

    async def add_station(self, *, name: str, code: str, pinyin: str, city: str) -> StationRecord:
        """Insert a station."""
        ...

    async def station_keys(self) -> list[tuple[str, str]]:
        """(name, telegraph code) of every station."""
        ...

    async def add_stations(self, rows: Sequence[dict[str, Any]]) -> None:
        """Insert stations (name, code, pinyin, city) in bulk."""
        ...

    async def stations_named(self, keys: Collection[str]) -> list[StationRecord]:
        """The stations whose name or telegraph code is one of ``keys``."""
        ...

    async def train_id(self, code: str) -> int | None:
        """The id of the train with this code, if any."""
        ...

    async def add_train(self, code: str, kind: str) -> int:
        """Insert a train without stops or carriages; its id."""
        ...

    async def clear_train(self, train_id: int, kind: str) -> None:
        """Remove a train's stops, carriages and seats and set its kind (before writing new ones)."""
        ...

    async def write_train_parts(self, train_id: int, spec: TrainSpec, station_ids: Sequence[int]) -> None:
        """Insert the stops (at ``station_ids``), carriages and generated seats of a train."""
        ...

    async def open_dates(self, code: str, *, since: dt.date) -> list[dt.date]:
        """The train's open sale days from ``since`` on, in order."""
        ...

    async def delete_train(self, train_id: int) -> None:
        """Remove a train with its seats, carriages and stops."""
        ...


class TimetableStore(Protocol):
    """Stations and trains as administrators publish them."""

    def transaction(self) -> AbstractAsyncContextManager[TimetableWrite]:
        """One transaction: commits when the block ends, rolls back on an exception; raises
        ``RecordConflict`` when a uniqueness rule refuses a write of the block."""
        ...

    async def find_stations(self, prefix: str | None, *, limit: int) -> list[StationRecord]:
        """Stations whose name, code or pinyin starts with ``prefix`` (all without it), by code."""
        ...

    async def train(self, code: str) -> TrainRecord | None:
        """A published train, stops and carriages in order."""
        ...

    async def train_summaries(self) -> list[TrainSummary]:
        """Every published train with stops, by code."""
        ...

    async def is_empty(self) -> bool:
        """True when no station and no train has been published yet."""
        ...
