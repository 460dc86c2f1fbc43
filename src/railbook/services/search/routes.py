"""The route index: station pairs + boarding date → legs with times, km and prices.

A date a passenger types is a boarding date: the day the train leaves the passenger's ``from``
station. A train that left its origin a day or more earlier (a stop reached after midnight) belongs
under that later date, so a key reads the train-days of the service dates ``D - BOARDING_LAG_DAYS ..
D`` and keeps the legs whose departure from ``from`` falls on ``D``.

One self-join of ``daily_train_stop`` per missing key, cached in the shared cache with randomised
expiry and one loader per key (in-process single flight, plus a ``SET NX PX`` lock across
processes). A key carries the fingerprints of those service dates (each changes whenever a train-day
opens that date), so a key's legs never change: each process also keeps its own copy and skips the
round trip.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import random
import uuid
from collections.abc import Callable, MutableMapping, Sequence
from typing import Any

from railbook.domain.timetable import (
    MINUTES_PER_DAY,
    arrival_minutes,
    boarding_date,
    departure_minutes,
    service_dates_for,
)
from railbook.kit.caching import HotCache, SingleFlight, jittered_ms
from railbook.services.search.directory import StationDirectory
from railbook.services.search.outage import SharedStoreGuard, Skipped
from railbook.services.search.ports import RouteStore, SearchCache

Leg = dict[str, Any]


class RouteIndex:
    """Legs between stations on a day, from the process's copy, the shared cache or the database."""

    def __init__(
        self,
        *,
        store: RouteStore,
        cache: SearchCache,
        guard: SharedStoreGuard,
        directory: StationDirectory,
        flights: SingleFlight,
        stats: MutableMapping[str, int],
        clock: Callable[[], float],
        rng: random.Random,
        route_ttl_seconds: float,
        empty_ttl_seconds: float,
        ttl_spread: float,
        lock_ms: int,
        max_entries: int,
    ) -> None:
        self.store = store
        self.cache = cache
        self.guard = guard
        self.directory = directory
        self.flights = flights
        self.stats = stats
        self.clock = clock
        self.rng = rng
        self.route_ttl_seconds = route_ttl_seconds
        self.empty_ttl_seconds = empty_ttl_seconds
        self.ttl_spread = ttl_spread
        self.lock_ms = lock_ms
        # The process's own copies, bounded, refreshed before the shared copy expires.
        self._copies = HotCache(
            ttl=route_ttl_seconds * (1 - ttl_spread), max_entries=max_entries, clock=clock
        )

    async def legs(
        self, date: dt.date, from_ids: Sequence[int] | None, to_ids: Sequence[int] | None
    ) -> list[Leg]:
        """Legs between any of ``from_ids`` and any of ``to_ids`` (None: any station) boarded on
        ``date``, sorted by departure. Cached per key; one loader per missing key across processes."""
        directory = await self.directory.current()
        if date not in directory.fingerprints and await self.directory.probe_since(self.clock()):
            directory = await self.directory.current()  # a day opened since the directory was loaded
        fingerprint = ".".join(directory.fingerprints.get(d, "0") for d in service_dates_for(date))
        pair = f"{_ids_text(from_ids)}:{_ids_text(to_ids)}"
        key = f"legs:{date.isoformat()}:{fingerprint}:{pair}"
        copy: list[Leg] | None = self._copies.get(key)
        if copy is not None:
            return copy
        legs = await self.flights.run(key, lambda: self._cached(key, date, from_ids, to_ids))
        # Empty answers are kept as long as the shared cache keeps them (a new train that day
        # changes the fingerprint, hence the key); the rest as long as route answers.
        expires_at = None if legs else self.clock() + self.empty_ttl_seconds * (1 - self.ttl_spread)
        self._copies.put(key, legs, expires_at=expires_at)
        return legs

    async def _cached(
        self, key: str, date: dt.date, from_ids: Sequence[int] | None, to_ids: Sequence[int] | None
    ) -> list[Leg]:
        cached = await self.guard.call(lambda: self.cache.get(key))
        if isinstance(cached, bytes):
            self.stats["route_hits"] += 1
            return _decode_legs(cached)
        if isinstance(cached, Skipped):
            return await self._load(date, from_ids, to_ids)
        token = uuid.uuid4().hex
        locked = await self.guard.call(lambda: self.cache.try_lock(key, token, self.lock_ms))
        if locked is False:
            # Another process is loading this key: wait briefly for its answer, then load ourselves.
            for _ in range(50):
                await asyncio.sleep(0.02)
                cached = await self.guard.call(lambda: self.cache.get(key))
                if isinstance(cached, bytes):
                    self.stats["route_waits"] += 1
                    return _decode_legs(cached)
                if isinstance(cached, Skipped):
                    break
        try:
            legs = await self._load(date, from_ids, to_ids)
            ttl = jittered_ms(
                self.route_ttl_seconds if legs else self.empty_ttl_seconds, self.ttl_spread, self.rng
            )
            await self.guard.call(lambda: self.cache.set(key, _encode_legs(legs), ttl))
        finally:
            if locked is True:
                await self.guard.call(lambda: self.cache.unlock(key, token))
        return legs

    async def _load(
        self, date: dt.date, from_ids: Sequence[int] | None, to_ids: Sequence[int] | None
    ) -> list[Leg]:
        """The store's stop pairs boarded on ``date`` as legs (one per train-day and pair, prices per
        class). ``dep_min``/``arr_min`` count from the service date's midnight, ``bdep`` from the
        boarding date's."""
        self.stats["route_queries"] += 1
        rows = await self.store.route_legs(service_dates_for(date), from_ids, to_ids)
        legs: dict[tuple[int, int, int], Leg] = {}
        for r in rows:
            if r.dep is None or r.arr is None:
                continue
            leg = legs.get((r.daily_train_id, r.fi, r.ti))
            if leg is None:
                dep_min = departure_minutes(r.dep, r.fa, r.fday)
                if boarding_date(r.service_date, dep_min // MINUTES_PER_DAY) != date:
                    continue  # boarded on another date
                leg = legs[(r.daily_train_id, r.fi, r.ti)] = {
                    "id": r.daily_train_id,
                    "code": r.train_code,
                    "kind": r.kind,
                    "fi": r.fi,
                    "fs": r.fs,
                    "dep": r.dep,
                    "sd": r.service_date.isoformat(),
                    "dep_min": dep_min,
                    "bdep": dep_min % MINUTES_PER_DAY,
                    "ti": r.ti,
                    "ts": r.ts,
                    "arr": r.arr,
                    "arr_min": arrival_minutes(r.arr, r.tday),
                    "km": r.tkm - r.fkm,
                    "prices": {},
                }
            if r.seat_class is not None:
                leg["prices"][r.seat_class] = r.price_fen
        return sorted(legs.values(), key=lambda leg: (leg["bdep"], leg["code"], leg["fi"], leg["ti"]))


def _ids_text(ids: Sequence[int] | None) -> str:
    return "*" if ids is None else ",".join(map(str, ids))


def _encode_legs(legs: list[Leg]) -> bytes:
    return json.dumps(legs, ensure_ascii=False, separators=(",", ":")).encode()


def _decode_legs(blob: bytes) -> list[Leg]:
    legs: list[Leg] = json.loads(blob)
    return legs
