"""The trips each passenger holds, in process memory (the embedded mode's claim_trip.lua)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from railbook.domain.sale import Trip
from railbook.services.booking.trip_ports import TripClaim, TripClash, TripRequest


@dataclass
class MemoryTrips:
    """The ``TripGuard`` of the embedded mode. Each call checks and writes without awaiting in between,
    so a claim is atomic on the event loop as the script is in Redis. Lives and dies with the process:
    every passenger's trips are restored from the database before the first claim after a start."""

    # passenger → order → (member, trip, claimed at)
    held: dict[int, dict[str, tuple[int, Trip, int]]] = field(default_factory=dict)
    trusted: bool = False  # every passenger's trips restored from the database since the start
    restoring: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def claim(self, request: TripRequest) -> TripClaim:
        order_id, member_id, trip, now = request.order_id, request.member_id, request.trip, request.now
        ignore, passenger_ids = request.ignore, request.passenger_ids
        if not self.trusted:
            return TripClaim(False)
        clash: TripClash | None = None
        taken: list[int] = []
        for pid in passenger_ids:
            trips = self.held.setdefault(pid, {})
            found: TripClash | None = None
            for other, (member, held, at) in list(trips.items()):
                if other in (order_id, ignore):
                    continue
                if held.ends < now:
                    del trips[other]
                elif held.collides(trip):
                    found = TripClash(pid, other, member, held.train_day, at)
                    break
            if found is None:
                trips[order_id] = (member_id, trip, now)
                taken.append(pid)
            elif clash is None:
                clash = found
        return TripClaim(True, clash, tuple(taken))

    async def restored(self) -> bool:
        return self.trusted

    async def restore(self, held: Sequence[tuple[int, str, int, Trip]], *, now: int) -> None:
        for pid, order_id, member_id, trip in held:
            self.held.setdefault(pid, {}).setdefault(order_id, (member_id, trip, 0))
        self.trusted = True

    async def drop(self, holds: Sequence[tuple[str, Sequence[int]]]) -> None:
        for order_id, pids in holds:
            for pid in pids:
                self.held.get(pid, {}).pop(order_id, None)
