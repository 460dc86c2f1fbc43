"""The trips each person holds, in process memory (the embedded mode's claim_trip.lua)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from railbook.domain.sale import Trip
from railbook.services.booking.trip_ports import RestoredTrip, TripClaim, TripClash, TripHolds, TripRequest


@dataclass
class MemoryTrips:
    """The ``TripGuard`` of the embedded mode. Each call checks and writes without awaiting in between,
    so a claim is atomic on the event loop as the script is in Redis. Lives and dies with the process:
    everyone's trips are restored from the database before the first claim after a start."""

    # traveller key (the person) → order → (member, trip, claimed at, passenger id in that order)
    held: dict[str, dict[str, tuple[int, Trip, int, int]]] = field(default_factory=dict)
    trusted: bool = False  # everyone's trips restored from the database since the start
    restoring: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def claim(self, request: TripRequest) -> TripClaim:
        order_id, member_id, trip, now = request.order_id, request.member_id, request.trip, request.now
        ignore = request.ignore
        if not self.trusted:
            return TripClaim(False)
        clash: TripClash | None = None
        taken: list[str] = []
        for traveller in request.travellers:
            key, pid = traveller.key, traveller.passenger_id
            trips = self.held.setdefault(key, {})
            found: TripClash | None = None
            for other, (member, held, at, holder) in list(trips.items()):
                if other in (order_id, ignore):
                    continue
                if held.ends < now:
                    del trips[other]
                elif held.collides(trip):
                    found = TripClash(pid, other, member, held.train_day, at, holder, key)
                    break
            if found is None:
                trips[order_id] = (member_id, trip, now, pid)
                taken.append(key)
            elif clash is None:
                clash = found
        return TripClaim(True, clash, tuple(taken))

    async def restored(self) -> bool:
        return self.trusted

    async def restore(self, held: Sequence[RestoredTrip], *, now: int) -> None:
        for key, pid, order_id, member_id, trip in held:
            self.held.setdefault(key, {}).setdefault(order_id, (member_id, trip, 0, pid))
        self.trusted = True

    async def drop(self, holds: TripHolds) -> None:
        for order_id, keys in holds:
            for key in keys:
                self.held.get(key, {}).pop(order_id, None)
