"""The trips each person holds, in Redis: one hash per traveller key, i.e. per person by ID number
whichever member lists them (see claim_trip.lua)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from railbook.adapters.redis.autopipe import AutoPipeline, raise_errors
from railbook.adapters.redis.cluster import autopipe_for
from railbook.domain.sale import Trip
from railbook.services.booking.trip_ports import RestoredTrip, TripClaim, TripClash, TripHolds, TripRequest

# A restored hash lives at least this long past its last trip (or now, when it holds none).
TRIPS_KEEP_SECONDS = 86400
# Set once everyone's trips were restored from the system of record; a loss of Redis data loses it with
# the trips (never expires: Redis runs with noeviction). ":2": the trips are kept per traveller key
# (they were per passenger record before), so an upgraded deployment restores them once in this form
# (an order a process of the older build accepts during the roll-out holds its trip in the older form
# only). The keys are made under the server's secret: a deployment that changes the secret deletes
# this flag with it, so the trips are restored under the new keys.
TRIPS_RESTORED_KEY = "trips:restored:2"
RESTORE_CHUNK = 500


def trips_key(traveller: str) -> str:
    """A person's trips, by traveller key (``identity.traveller_key``): its own hash tag, so a cluster
    keeps each person on one slot."""
    return f"trips:{{t{traveller}}}"


def _script(name: str) -> str:
    return resources.files("railbook.adapters.redis").joinpath("lua", f"{name}.lua").read_text("utf-8")


CLAIM_TRIP_LUA = _script("claim_trip")
RESTORE_TRIPS_LUA = _script("restore_trips")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def trip_value(member_id: int, trip: Trip, claimed_at: int, passenger_id: int) -> str:
    """A trip as its hash field's value (claim_trip.lua parses it): ``passenger_id`` is the passenger
    record the order holds it for (a clash names it to the system of record)."""
    return f"{member_id} {trip.train_day} {trip.starts} {trip.ends} {claimed_at} {passenger_id}"


@dataclass(frozen=True, slots=True)
class PreparedClaim:
    """A claim as commands for a round trip shared with other calls: ``commands`` (the "restored"
    flag, then one claim_trip.lua call per traveller) run first, and ``read`` makes the TripClaim of
    their replies. ``gate_keys`` (each traveller's hash, then the flag) let an admission that runs
    next in the same round trip on a single Redis check that every trip is held (ADMIT_LUA)."""

    commands: list[tuple[Any, ...]]
    gate_keys: list[str]
    read: Callable[[Sequence[Any]], TripClaim]


class RedisTrips:
    """The ``TripGuard`` of the distributed mode. A claim is one script call per traveller, all in one
    shared round trip (each call touches only its traveller's slot), behind a read of the global
    "restored" flag in the same round trip; on a single Redis the intake sends it in the order's
    admission and allocation round trip instead (``prepare_claim``)."""

    def __init__(self, redis: Any, autopipe: AutoPipeline | None = None) -> None:
        self.redis = redis
        self.batch = autopipe or autopipe_for(redis)
        self._claim = redis.register_script(CLAIM_TRIP_LUA)
        self._restore = redis.register_script(RESTORE_TRIPS_LUA)
        self.restoring = asyncio.Lock()
        # What this process last saw of the flag: the claims rely on it, and the same round trip reads
        # it again, so a claim made on a belief the flag no longer backs is not trusted (the caller
        # gives back what it held).
        self._restored = False

    async def claim(self, request: TripRequest) -> TripClaim:
        for _ in range(2):
            prepared = self.prepare_claim(request)
            claim = prepared.read(
                raise_errors(await self.batch.execute_scripted(prepared.commands, [CLAIM_TRIP_LUA]))
            )
            if claim.trusted or not self._restored:
                return claim
            # This process had not seen the flag yet: claim again on it.
        return TripClaim(False)

    def prepare_claim(self, request: TripRequest) -> PreparedClaim:
        """The claim as commands for a shared round trip (see ``PreparedClaim``)."""
        args = (
            request.order_id,
            request.member_id,
            request.trip.train_day,
            request.trip.starts,
            request.trip.ends,
            request.now,
            request.ignore or "",
            int(self._restored),
        )
        travellers = request.travellers
        keys = [trips_key(t.key) for t in travellers]
        commands: list[tuple[Any, ...]] = [("EXISTS", TRIPS_RESTORED_KEY)]
        commands += [
            ("EVALSHA", self._claim.sha, 1, key, *args, t.passenger_id)
            for key, t in zip(keys, travellers, strict=True)
        ]

        def read(replies: Sequence[Any]) -> TripClaim:
            self._restored = bool(replies[0])
            codes = [int(r[0]) for r in replies[1:]]
            held = tuple(t.key for t, c in zip(travellers, codes, strict=True) if c == 1)
            if not self._restored or -3 in codes:
                return TripClaim(False, None, held)
            for t, reply in zip(travellers, replies[1:], strict=True):
                if int(reply[0]) == -1:
                    _, order, member, day, at, holder = (_text(r) for r in reply)
                    clash = TripClash(t.passenger_id, order, int(member), day, int(at), int(holder), t.key)
                    return TripClaim(True, clash, held)
            return TripClaim(True, None, held)

        return PreparedClaim(commands, [*keys, TRIPS_RESTORED_KEY], read)

    async def restored(self) -> bool:
        self._restored = bool(await self.redis.exists(TRIPS_RESTORED_KEY))
        return self._restored

    async def restore(self, held: Sequence[RestoredTrip], *, now: int) -> None:
        by_traveller: dict[str, list[tuple[int, str, int, Trip]]] = {}
        for key, pid, order_id, member_id, trip in held:
            by_traveller.setdefault(key, []).append((pid, order_id, member_id, trip))
        commands: list[tuple[Any, ...]] = []
        for key, trips in by_traveller.items():
            last = max([now, *(t.ends for _, _, _, t in trips)])
            args: list[Any] = [now, last - now + TRIPS_KEEP_SECONDS]
            for pid, order_id, member_id, trip in trips:
                args += [order_id, trip_value(member_id, trip, 0, pid)]
            commands.append(("EVALSHA", self._restore.sha, 1, trips_key(key), *args))
        for start in range(0, len(commands), RESTORE_CHUNK):
            chunk = commands[start : start + RESTORE_CHUNK]
            raise_errors(await self.batch.execute_scripted(chunk, [RESTORE_TRIPS_LUA]))
        await self.redis.set(TRIPS_RESTORED_KEY, str(now))
        self._restored = True

    async def drop(self, holds: TripHolds) -> None:
        commands = [("HDEL", trips_key(key), order_id) for order_id, keys in holds for key in keys]
        if commands:
            raise_errors(await self.batch.execute(commands))
