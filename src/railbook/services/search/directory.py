"""The station directory: every term a passenger may type (name, telegraph code, city) and the open
train-days, held in process and refreshed in the background; terms it lacks are tested against the
shared Bloom filter, so a flood of made-up names never reaches the database.

A cheap version probe (newest station and train-day ids) runs every ``probe_seconds``, so a new
station or sale day is seen within about a second without a full reload per request; before saying
"no such thing" the directory is probed again (shared, at most one per ``miss_probe_seconds``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from collections import defaultdict
from collections.abc import Callable, Iterable, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from railbook.domain.bloom import BloomShape, build_bitmap, station_term_key, train_day_key
from railbook.domain.errors import NotFound, StationNotFound
from railbook.domain.timetable import BOARDING_LAG_DAYS
from railbook.kit.caching import HotCache, SingleFlight, jittered_ms
from railbook.kit.clock import beijing_today
from railbook.services.search.outage import SharedStoreGuard, Skipped
from railbook.services.search.ports import RouteStore, SearchCache, StationRef
from railbook.services.search.station_names import EMPTY_INDEX, StationName, StationNameIndex, station_names

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Directory:
    """Stations by every term a passenger may type, and the open train-days, as of ``loaded_at``."""

    terms: dict[str, tuple[StationRef, ...]]
    train_days: frozenset[tuple[str, dt.date]]
    fingerprints: dict[dt.date, str]  # per date: changes whenever a train-day opens that date
    loaded_at: float
    version: tuple[int, int] = (0, 0)  # newest station id and newest train-day id when loaded
    names: StationNameIndex = EMPTY_INDEX  # every station by name, pinyin, initials and code

    def bloom_keys(self) -> Iterable[str]:
        """The keys the Bloom filter holds: every term and every open train-day."""
        yield from (station_term_key(t) for t in self.terms)
        yield from (train_day_key(code, d.isoformat()) for code, d in self.train_days)


class StationDirectory:
    """The process's directory, its Bloom filter and the resolution of station terms."""

    def __init__(
        self,
        *,
        store: RouteStore,
        cache: SearchCache,
        guard: SharedStoreGuard,
        flights: SingleFlight,
        hot: HotCache,
        stats: MutableMapping[str, int],
        clock: Callable[[], float],
        rng: random.Random,
        bloom_shape: BloomShape,
        refresh_seconds: float,
        probe_seconds: float,
        miss_probe_seconds: float,
        empty_ttl_seconds: float,
        ttl_spread: float,
    ) -> None:
        self.store = store
        self.cache = cache
        self.guard = guard
        self.flights = flights
        self.hot = hot  # answers built from an older directory go when it changes
        self.stats = stats
        self.clock = clock
        self.rng = rng
        self.bloom_shape = bloom_shape
        self.refresh_seconds = refresh_seconds
        self.probe_seconds = probe_seconds
        self.miss_probe_seconds = miss_probe_seconds
        self.empty_ttl_seconds = empty_ttl_seconds
        self.ttl_spread = ttl_spread
        self._directory: Directory | None = None
        self._refresh: asyncio.Future[Directory] | None = None
        self._bloom_stale = False
        self._last_probe = float("-inf")
        self._probe_task: asyncio.Future[bool] | None = None

    async def aclose(self) -> None:
        """Stop the background refresh and probe."""
        for task in (self._refresh, self._probe_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    async def reload(self) -> Directory:
        """Reload the directory and rebuild the Bloom filter now."""
        return await self.flights.run("directory", lambda: self._load(force_bloom=True))

    async def current(self) -> Directory:
        """The current directory; a stale one is served while a fresh one loads in the background,
        and a version probe starts when the last one is ``probe_seconds`` old."""
        current = self._directory
        if current is None:
            return await self.flights.run("directory", lambda: self._load(force_bloom=False))
        if self.clock() - self._last_probe >= self.probe_seconds and (
            self._probe_task is None or self._probe_task.done()
        ):
            self._start_probe().add_done_callback(_log_failure)
        if self.clock() - current.loaded_at >= self.refresh_seconds or self._bloom_stale:
            if self._refresh is None or self._refresh.done():
                force = self._bloom_stale
                self._bloom_stale = False
                self._refresh = asyncio.ensure_future(
                    self.flights.run("directory", lambda: self._load(force_bloom=force))
                )
                self._refresh.add_done_callback(_log_failure)
        return current

    def _start_probe(self) -> asyncio.Future[bool]:
        self._last_probe = self.clock()
        self._probe_task = asyncio.ensure_future(self._probe())
        return self._probe_task

    async def _probe(self) -> bool:
        """Reload the directory (and rebuild the Bloom filter) if a station or train-day was added."""
        version = await self.store.catalog_version()
        current = self._directory
        if current is not None and version == current.version:
            return False
        self.hot.clear()
        await self.flights.run("directory", lambda: self._load(force_bloom=True))
        return True

    async def probe_since(self, arrived: float) -> bool:
        """Make sure the directory is no older than the request before answering "no such thing";
        True if it changed. Probes are shared and at most one per ``miss_probe_seconds`` starts, so a
        flood of made-up names costs a bounded trickle of one-row queries, not one per request."""
        before = self._directory
        # A probe or a background reload that started since the request arrived (either sets
        # ``_last_probe`` as it starts) has read the catalog after it: wait for it, then its directory
        # is the answer, changed or not.
        running = [t for t in (self._probe_task, self._refresh) if t is not None and not t.done()]
        if running:
            await asyncio.wait(running)
        if self._last_probe >= arrived:
            return self._directory is not before
        wait = self._last_probe + self.miss_probe_seconds - self.clock()
        if wait > 0:
            await asyncio.sleep(wait)
            task = self._probe_task
            if task is not None and self._last_probe >= arrived:
                return await asyncio.shield(task)
        self.stats["miss_probes"] += 1
        return await asyncio.shield(self._start_probe())

    async def _load(self, *, force_bloom: bool) -> Directory:
        today = beijing_today()
        self._last_probe = self.clock()
        # Train-days of the last few service dates too: their trains may still leave a stop today or
        # later (a boarding date after midnight belongs to the day before's train-day).
        catalog = await self.store.catalog(today - dt.timedelta(days=BOARDING_LAG_DAYS))
        terms: dict[str, list[StationRef]] = defaultdict(list)
        for ref in catalog.stations:
            for term in {ref.name, ref.code, ref.city}:
                if term:
                    terms[term].append(ref)
        per_date: dict[dt.date, list[int]] = defaultdict(list)
        for d in catalog.days:
            per_date[d.date].append(d.daily_train_id)
        directory = Directory(
            terms={t: tuple(sorted(refs, key=lambda r: r.id)) for t, refs in terms.items()},
            train_days=frozenset((d.train_code, d.date) for d in catalog.days),
            fingerprints={date: f"{len(ids)}.{max(ids)}" for date, ids in per_date.items()},
            loaded_at=self.clock(),
            version=catalog.version,
            names=await asyncio.to_thread(
                station_names, [(r.name, r.code, r.pinyin, r.city) for r in catalog.stations]
            ),
        )
        self._directory = directory
        self.stats["directory_loads"] += 1
        claimed = await self.guard.call(lambda: self.cache.claim("bloom", int(self.refresh_seconds * 800)))
        if force_bloom or claimed is True:
            bits = await asyncio.to_thread(build_bitmap, self.bloom_shape, list(directory.bloom_keys()))
            if not isinstance(await self.guard.call(lambda: self.cache.bloom_store(bytes(bits))), Skipped):
                self.stats["bloom_builds"] += 1
        return directory

    async def names_starting(self, prefix: str) -> list[StationName]:
        """Stations with a name, pinyin, initials or code starting with ``prefix``; before answering
        "none" the directory is probed once, so a station added a moment ago is found."""
        arrived = self.clock()
        found = (await self.current()).names.starting_with(prefix)
        if not found and prefix.strip() and await self.probe_since(arrived):
            found = (await self.current()).names.starting_with(prefix)
        return found

    async def bloom_maybe(self, keys: Sequence[str]) -> list[bool]:
        """Bloom answers for keys the directory lacks; all "maybe" when Redis is unreachable."""
        groups = [self.bloom_shape.positions(k) for k in keys]
        answer = await self.guard.call(lambda: self.cache.bloom_test(groups))
        if isinstance(answer, Skipped):
            return [True for _ in keys]
        return answer

    async def resolve(self, terms: Sequence[tuple[str, str]]) -> list[tuple[StationRef, ...]]:
        """Stations named by each (term, field); 404 STATION_NOT_FOUND for an unknown one."""
        arrived = self.clock()
        found: list[tuple[StationRef, ...] | None] = []
        for attempt in range(2):
            directory = await self.current()
            found = [directory.terms.get(t) for t, _ in terms]
            missing = [i for i, refs in enumerate(found) if refs is None]
            if not missing:
                break
            maybe = await self.bloom_maybe([station_term_key(terms[i][0]) for i in missing])
            absent = [terms[i] for i, is_maybe in zip(missing, maybe, strict=True) if not is_maybe]
            if absent:
                if attempt == 0 and (await self.probe_since(arrived) or self._directory is not directory):
                    continue  # the directory was loaded again since it was read: look again
                self.stats["bloom_rejected"] += 1
                raise station_not_found(*absent[0])
            for i in missing:
                found[i] = await self._lookup_unlisted(*terms[i])
            break
        return [refs for refs in found if refs is not None]

    async def _lookup_unlisted(self, term: str, field_name: str) -> tuple[StationRef, ...]:
        """A Bloom "maybe" the directory does not know: cached "no such thing", else one database read."""
        negative_key = "none:station:" + term
        cached = await self.guard.call(lambda: self.cache.get(negative_key))
        if isinstance(cached, bytes):
            self.stats["negative_hits"] += 1
            raise station_not_found(term, field_name)

        async def load() -> tuple[StationRef, ...]:
            self.stats["station_queries"] += 1
            refs = await self.store.stations_named(term)
            if not refs:
                ttl = jittered_ms(self.empty_ttl_seconds, self.ttl_spread, self.rng)
                await self.guard.call(lambda: self.cache.set(negative_key, b"1", ttl))
            else:
                self._bloom_stale = True  # a new station: refresh the directory and the filter soon
            return refs

        refs = await self.flights.run("station:" + term, load)
        if not refs:
            raise station_not_found(term, field_name)
        return refs


def station_not_found(term: str, field_name: str) -> NotFound:
    """The 404 for a term no station or city is called."""
    return StationNotFound(
        f"No station or city is called {term!r}.",
        details={"field": field_name, "station": term},
    )


def _log_failure(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("search_directory_refresh_failed", error=repr(task.exception())[:300])
