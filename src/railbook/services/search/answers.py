"""What search answers: train offers with seats left and prices, and seat maps."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class SeatOffer:
    remaining: int
    price_fen: int  # the adult fare
    fares: Mapping[str, int]  # fare of every passenger type (``pricing.FARE_TYPES``)


@dataclass(frozen=True, slots=True)
class TrainOffer:
    """A train between two stations: ``date`` is the boarding date (the day it leaves
    ``from_station``), ``service_date`` the day it left its origin, ``arrival_date`` the day it
    reaches ``to_station``."""

    train_code: str
    date: dt.date
    service_date: dt.date
    arrival_date: dt.date
    from_station: str
    departs: str
    from_index: int
    to_station: str
    arrives: str
    to_index: int
    duration_minutes: int
    seats: dict[str, SeatOffer]


@dataclass(frozen=True, slots=True)
class SearchAnswer:
    offers: tuple[TrainOffer, ...]
    stale: bool = False  # counts came from the system of record while Redis was unreachable


@dataclass(slots=True)
class HotAnswer:
    """A hot-cache entry: the answer, the API's encoding of it once someone has asked for it, and what
    it was built from (the route legs as cached, the counts per leg), so that a rebuild finding the
    same legs and counts reuses answer and encoding instead of building and encoding them again."""

    answer: SearchAnswer
    body: bytes | None = None
    legs: list[dict[str, Any]] | None = None
    counts: list[dict[str, int]] | None = None
    open_legs: tuple[int, ...] | None = None  # which of ``legs`` were still on sale (the cut-off)
    stamp: tuple[tuple[Any, int], ...] = ()  # (train-day, change count) of each day it counted


@dataclass(frozen=True, slots=True)
class SeatCell:
    name: str
    free: bool


@dataclass(frozen=True, slots=True)
class SeatMapAnswer:
    carriages: list[tuple[int, list[tuple[int, list[SeatCell]]]]]  # carriage → rows → seats
    stale: bool = False
