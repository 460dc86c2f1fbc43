"""What search needs from the outside: the shared answer cache (Redis or in process) and the
read-only views of the database it searches (stations, train-days, route legs, seats)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

SeatPlace = tuple[int, int, int, str]  # (seat_index, carriage, row, letter)


class SearchCache(Protocol):
    """Where search keeps shared answers: Redis (distributed) or a dict (embedded)."""

    distributed: bool

    async def get(self, key: str) -> bytes | None: ...
    async def set(self, key: str, value: bytes, ttl_ms: int) -> None: ...
    async def try_lock(self, key: str, token: str, ttl_ms: int) -> bool: ...
    async def unlock(self, key: str, token: str) -> None: ...
    async def claim(self, name: str, ttl_ms: int) -> bool: ...
    async def bloom_store(self, bits: bytes) -> None: ...
    async def bloom_test(self, groups: Sequence[Sequence[int]]) -> list[bool]: ...
    async def ping(self) -> None: ...
    async def flush(self) -> int: ...

    def is_outage(self, exc: BaseException) -> bool:
        """Whether ``exc`` means the store behind the cache (the allocator's too) is unreachable or
        not answering, as opposed to an answer such as "day not loaded"."""
        ...


class SearchChangeFeed(Protocol):
    """Tells every search process which train-days changed (a commit, cancellation, refund or change
    made in any process), so that no count snapshot outlives the change anywhere: Redis pub/sub in
    distributed mode; none when embedded (one process: its own ``train_days_changed`` is enough)."""

    async def publish(self, days: Sequence[tuple[str, dt.date]]) -> None:
        """Announce that these train-days changed, to every listening process but this one."""
        ...

    async def listen(
        self,
        changed: Callable[[list[tuple[str, dt.date]]], None],
        lost: Callable[[], None],
    ) -> None:
        """Call ``changed`` with the train-days each announcement of another process names, until
        cancelled; ``lost`` whenever announcements may have been missed (subscribed anew after the
        connection dropped), so the caller forgets everything it cached."""
        ...


@dataclass(frozen=True, slots=True)
class StationRef:
    id: int
    name: str
    code: str
    city: str
    pinyin: str = ""  # as the catalog has it (often none: the station-name lookup generates one)


@dataclass(frozen=True, slots=True)
class OpenDay:
    """A train-day open for sale."""

    daily_train_id: int
    train_code: str
    date: dt.date


@dataclass(frozen=True, slots=True)
class Catalog:
    """Every station and every train-day from a date on, and the catalog version they were read at."""

    version: tuple[int, int]  # newest station id and newest train-day id
    stations: list[StationRef]
    days: list[OpenDay]


@dataclass(frozen=True, slots=True)
class DayInfo:
    """A train-day's stops and seat classes."""

    daily_train_id: int
    train_code: str
    kind: str
    stops: tuple[tuple[int, str], ...]  # (station_id, station_name) by stop index
    classes: frozenset[str]
    date: dt.date | None = None  # the service date
    departure_days: tuple[int, ...] = ()  # by stop index: days after the service date it leaves


class LegRow(NamedTuple):
    """One row of the route index: a train-day's stop pair (from before to), with one seat class's
    price (None when the pair has no fares), and the train-day's service date."""

    daily_train_id: int
    train_code: str
    kind: str
    fi: int
    fs: str
    dep: str | None
    fa: str | None
    fday: int
    fkm: int
    ti: int
    ts: str
    arr: str | None
    tday: int
    tkm: int
    seat_class: str | None
    price_fen: int | None
    service_date: dt.date


class TicketSpan(NamedTuple):
    """The seat and segments an active ticket holds."""

    daily_train_id: int
    seat_class: str
    daily_seat_id: int
    from_index: int
    to_index: int


class RouteStore(Protocol):
    """The network as search reads it: stations, open train-days and the route index."""

    async def catalog_version(self) -> tuple[int, int]:
        """Newest station id and newest train-day id."""
        ...

    async def catalog(self, since: dt.date) -> Catalog:
        """Every station, and the train-days from ``since`` on, with the version read beside them."""
        ...

    async def stations_named(self, term: str) -> tuple[StationRef, ...]:
        """Stations whose name, telegraph code or city is ``term``, by id."""
        ...

    async def route_legs(
        self, dates: Sequence[dt.date], from_ids: Sequence[int] | None, to_ids: Sequence[int] | None
    ) -> list[LegRow]:
        """The stop pairs of the train-days of ``dates`` (service dates) from any of ``from_ids`` to any
        of ``to_ids`` (None: any station)."""
        ...

    async def train_day(self, train_code: str, date: dt.date) -> DayInfo | None:
        """A train-day's stops and classes; None if it does not exist."""
        ...


class SeatStore(Protocol):
    """The seats of train-days and the tickets that hold them (the system of record)."""

    async def seat_layout(self, daily_train_id: int, seat_class: str) -> list[SeatPlace]:
        """Where each seat of a class is, by seat index."""
        ...

    async def sold_masks(self, daily_train_id: int, statuses: Sequence[str]) -> dict[str, dict[int, int]]:
        """Segments held by tickets in ``statuses``: class → seat index → mask."""
        ...

    async def seats_and_tickets(
        self, daily_train_ids: Sequence[int], statuses: Sequence[str]
    ) -> tuple[dict[tuple[int, str], int], list[TicketSpan]]:
        """Seats per (train-day, class), and the tickets in ``statuses`` on those train-days."""
        ...
