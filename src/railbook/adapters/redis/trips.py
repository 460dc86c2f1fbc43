"""The trips each passenger holds, in Redis: one hash per passenger (see claim_trip.lua)."""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from typing import Any

from railbook.adapters.redis.autopipe import AutoPipeline, raise_errors
from railbook.domain.sale import Trip
from railbook.services.booking.ports import TripClash

# A restored hash lives at least this long past its last trip (or now, when it holds none).
TRIPS_KEEP_SECONDS = 86400


def trips_key(passenger_id: int) -> str:
    """The passenger's trips: its own hash tag, so a cluster keeps each passenger on one slot."""
    return f"trips:{{p{passenger_id}}}"


def _script(name: str) -> str:
    return resources.files("railbook.adapters.redis").joinpath("lua", f"{name}.lua").read_text("utf-8")


CLAIM_TRIP_LUA = _script("claim_trip")
RESTORE_TRIPS_LUA = _script("restore_trips")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def trip_value(member_id: int, trip: Trip, claimed_at: int) -> str:
    """A trip as its hash field's value (claim_trip.lua parses it)."""
    return f"{member_id} {trip.train_day} {trip.starts} {trip.ends} {claimed_at}"


class RedisTrips:
    """The ``TripGuard`` of the distributed mode. A claim is one script call per passenger, all in one
    shared round trip (each call touches only its passenger's slot)."""

    def __init__(self, redis: Any, autopipe: AutoPipeline | None = None) -> None:
        self.redis = redis
        self.batch = autopipe or AutoPipeline(redis)
        self._claim = redis.register_script(CLAIM_TRIP_LUA)
        self._restore = redis.register_script(RESTORE_TRIPS_LUA)

    async def claim(
        self,
        order_id: str,
        member_id: int,
        trip: Trip,
        passenger_ids: Sequence[int],
        *,
        now: int,
        ignore: str | None = None,
    ) -> tuple[list[int], TripClash | None]:
        args = (order_id, member_id, trip.train_day, trip.starts, trip.ends, now, ignore or "")
        commands = [("EVALSHA", self._claim.sha, 1, trips_key(p), *args) for p in passenger_ids]
        replies = raise_errors(await self.batch.execute_scripted(commands, [CLAIM_TRIP_LUA]))
        unknown: list[int] = []
        clash: TripClash | None = None
        for pid, reply in zip(passenger_ids, replies, strict=True):
            code = int(reply[0])
            if code == -3:
                unknown.append(pid)
            elif code == -1 and clash is None:
                clash = TripClash(pid, _text(reply[1]), int(reply[2]), _text(reply[3]), int(_text(reply[4])))
        return unknown, clash

    async def restore(self, passenger_id: int, held: Sequence[tuple[str, int, Trip]], *, now: int) -> None:
        last = max([now, *(t.ends for _, _, t in held)])
        args: list[Any] = [now, last - now + TRIPS_KEEP_SECONDS]
        for order_id, member_id, trip in held:
            args += [order_id, trip_value(member_id, trip, 0)]
        command = ("EVALSHA", self._restore.sha, 1, trips_key(passenger_id), *args)
        raise_errors(await self.batch.execute_scripted([command], [RESTORE_TRIPS_LUA]))

    async def drop(self, holds: Sequence[tuple[str, Sequence[int]]]) -> None:
        commands = [("HDEL", trips_key(p), order_id) for order_id, pids in holds for p in pids]
        if commands:
            raise_errors(await self.batch.execute(commands))
