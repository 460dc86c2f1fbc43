"""What the booking feature needs to keep one person to one seat at a time: the trip guard and what
its claims tell (see ``booking.trips``). Adapters may import this module, as ``booking.ports``."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from railbook.domain.sale import Trip


class TripsNotHeld(Exception):
    """The passengers' trip claims that rode in an admission's round trip did not hold every trip:
    nothing was admitted. ``claim`` (set by the intake) tells what the claims did."""

    def __init__(self, claim: TripClaim | None = None) -> None:
        super().__init__("the order's trips are not all held")
        self.claim = claim


@dataclass(frozen=True, slots=True)
class Traveller:
    """A passenger of an order as the trip guard knows them: the passenger record, and the person
    behind it (``identity.traveller_key`` of the ID number; the same for every member's record of
    that person). Trips are kept and checked per traveller key."""

    passenger_id: int
    key: str


@dataclass(frozen=True, slots=True)
class TripClash:
    """A trip a person already holds that collides with the one asked for."""

    passenger_id: int  # the passenger of the order asking (the one a refusal names)
    order_id: str  # the order holding the trip
    member_id: int  # that order's member
    train_day: str
    claimed_at: int  # Unix seconds when it was claimed (0: restored from the system of record)
    holder_id: int  # the passenger that order holds it for: the same person, maybe another member's record
    traveller: str  # the person's traveller key


@dataclass(frozen=True, slots=True)
class TripClaim:
    """What a claim did: whether the trips are trusted (False: nothing held), the first clash, and
    the traveller keys whose trip it holds now (to give back if the order is refused)."""

    trusted: bool
    clash: TripClash | None = None
    held: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TripRequest:
    """A claim of the passengers' trips (``TripGuard.claim``'s arguments), for an intake that makes
    it in its own round trip."""

    order_id: str
    member_id: int
    trip: Trip
    travellers: Sequence[Traveller]
    now: int
    ignore: str | None = None


def traveller_keys_of(passengers: Iterable[Mapping[str, Any]]) -> list[str]:
    """The traveller keys an order's message or pending record carries for its passengers (none in
    one accepted before they were carried: its trips are then left to heal at their next clash)."""
    return [str(p["traveller"]) for p in passengers if p.get("traveller")]


# A trip as the system of record knows it: (passenger, ID number, order, member, trip, ticket status).
RecordedTrip = tuple[int, str, str, int, Trip, str]
# A trip to restore into the guard: (traveller key, passenger, order, member, trip).
RestoredTrip = tuple[str, int, str, int, Trip]
# An order's trips to give up: (order, the traveller keys of its passengers concerned).
TripHolds = Sequence[tuple[str, Sequence[str]]]


class TripGuard(Protocol):
    """One person, one seat at a time: the trips each person holds (in flight, unpaid or paid), kept
    per traveller key (the person by ID number, whichever member lists them; Redis: one hash per
    traveller under its own hash tag; embedded: process memory). The trips are trusted only once
    everyone's were restored from the system of record since the last loss of that data
    (``restore``); until then ``claim`` holds nothing."""

    restoring: asyncio.Lock  # one restore at a time in a process

    async def claim(self, request: TripRequest) -> TripClaim:
        """Hold the request's trip for each of its travellers, atomically per traveller: one holding a
        trip that collides with it (other than the order ``ignore``'s) is not given it. The trips
        held are kept either way (the caller drops them when it refuses the order)."""
        ...

    async def restored(self) -> bool:
        """Whether everyone's trips were restored since the last loss of this data."""
        ...

    async def restore(self, held: Sequence[RestoredTrip], *, now: int) -> None:
        """Set the trips read from the system of record where missing, then trust the trips."""
        ...

    async def drop(self, holds: TripHolds) -> None:
        """Forget the trips of these orders for these traveller keys (the order ended, a ticket was
        refunded or changed)."""
        ...
