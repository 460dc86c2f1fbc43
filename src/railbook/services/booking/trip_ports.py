"""What the booking feature needs to keep one person to one seat at a time: the trip guard and what
its claims tell (see ``booking.trips``). Adapters may import this module, as ``booking.ports``."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from railbook.domain.sale import Trip


class TripsNotHeld(Exception):
    """The passengers' trip claims that rode in an admission's round trip did not hold every trip:
    nothing was admitted. ``claim`` (set by the intake) tells what the claims did."""

    def __init__(self, claim: TripClaim | None = None) -> None:
        super().__init__("the order's trips are not all held")
        self.claim = claim


@dataclass(frozen=True, slots=True)
class TripClash:
    """A trip a passenger already holds that collides with the one asked for."""

    passenger_id: int
    order_id: str
    member_id: int
    train_day: str
    claimed_at: int  # Unix seconds when it was claimed (0: restored from the system of record)


@dataclass(frozen=True, slots=True)
class TripClaim:
    """What a claim did: whether the trips are trusted (False: nothing held), the first clash, and
    the passengers whose trip it holds now (to give back if the order is refused)."""

    trusted: bool
    clash: TripClash | None = None
    held: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class TripRequest:
    """A claim of the passengers' trips (``TripGuard.claim``'s arguments), for an intake that makes
    it in its own round trip."""

    order_id: str
    member_id: int
    trip: Trip
    passenger_ids: Sequence[int]
    now: int
    ignore: str | None = None


# A trip as the system of record knows it: (passenger, order, member, trip, ticket status).
RecordedTrip = tuple[int, str, int, Trip, str]


class TripGuard(Protocol):
    """One person, one seat at a time: the trips each passenger holds (in flight, unpaid or paid),
    kept per passenger (Redis: one hash per passenger under its own hash tag; embedded: process
    memory). The trips are trusted only once every passenger's were restored from the system of
    record since the last loss of that data (``restore``); until then ``claim`` holds nothing."""

    restoring: asyncio.Lock  # one restore at a time in a process

    async def claim(self, request: TripRequest) -> TripClaim:
        """Hold the request's trip for each of its passengers, atomically per passenger: a passenger
        holding a trip that collides with it (other than the order ``ignore``'s) is not given it. The
        trips held are kept either way (the caller drops them when it refuses the order)."""
        ...

    async def restored(self) -> bool:
        """Whether every passenger's trips were restored since the last loss of this data."""
        ...

    async def restore(self, held: Sequence[tuple[int, str, int, Trip]], *, now: int) -> None:
        """Set the trips read from the system of record (passenger, order, member, trip) where
        missing, then trust the trips."""
        ...

    async def drop(self, holds: Sequence[tuple[str, Sequence[int]]]) -> None:
        """Forget the trips of these orders for these passengers (the order ended, a ticket was
        refunded or changed)."""
        ...
