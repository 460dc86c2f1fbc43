"""Search: trains between two stations on a day, with what remains in each seat class, and seat maps.

Read path, cheapest first:
1. a hot in-process answer cache (each answer at most ``hot_seconds`` old, 1 s by default);
2. station terms (name, telegraph code, city) resolved through an in-process directory of
   stations and open train-days, refreshed every ``refresh_seconds`` in the background; a term the
   directory lacks is tested against the shared Bloom filter (one ``BITFIELD_RO`` round trip):
   "absent" answers 404 at once, so a flood of made-up names never reaches the database; a
   "maybe" (a false positive, or a station added since the last refresh) consults a cached
   "no such thing" answer, then the database once, single-flight;
3. the route index (station pairs + date → legs with times, km and prices), one self-join of
   ``daily_train_stop`` per missing key, cached with randomised expiry, one loader per key
   (in-process task per key, plus a ``SET NX PX`` lock across processes);
4. remaining counts from a per-train-day snapshot of the allocator's run tables (``count_tables``:
   one pipelined round trip for every train-day of an answer that lacks a fresh one), shared by
   every station pair on that train; a snapshot is used for at most ``hot_seconds`` after it was
   read, and an answer built from it expires with its oldest snapshot, so counts lag the allocator
   by at most ``hot_seconds`` (1 s) plus the orders in flight.

A hot hit costs no database query and no Redis round trip; the API keeps the encoded body beside
the answer (``search_encoded``), so a hit is not re-serialised either. An answer rebuilt once its
bound has passed that finds the same route legs and the same counts (nothing sold on those legs
meanwhile) keeps the previous answer and its encoding, with the new read time.

When Redis fails, a circuit breaker stops asking it for a cool-down; meanwhile routes come from the
database and counts from the active tickets (the system of record), and the answer is marked stale.
The directory and the Bloom filter are rebuilt every ``refresh_seconds`` (the catalog and sales
services do not notify search): a station or day added since is still found through the "maybe"
path and the directory's double-check, at the cost of one database read.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import random
import time
import uuid
from collections import OrderedDict, defaultdict
from collections.abc import Awaitable, Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import structlog
from sqlalchemy import and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased

from railbook.adapters.db.models import (
    DailyPairInventory,
    DailySeat,
    DailyTrain,
    DailyTrainStop,
    Station,
    Ticket,
)
from railbook.config import Settings
from railbook.domain.bloom import BloomShape, build_bitmap, station_term_key, train_day_key
from railbook.domain.errors import (
    BadJourney,
    InvalidInput,
    NotFound,
    SameStation,
    SeatClassNotOnTrain,
    StationNotFound,
    StationNotOnTrain,
    TrainNotFound,
)
from railbook.domain.seating import SEAT_CLASSES, journey_mask, seat_name
from railbook.domain.timetable import MINUTES_PER_DAY, TRAIN_KINDS, check_display_name, clock_minutes
from railbook.services.ports import Allocator, DayCounts
from railbook.services.sales.service import (
    ACTIVE_TICKET_STATUSES,
    active_masks,
    check_on_sale,
    ensure_day_loaded,
    sale_window,
)
from railbook.services.sales.service import today as sales_today

log = structlog.get_logger(__name__)
T = TypeVar("T")


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


def is_cache_outage(exc: BaseException) -> bool:
    """Errors that mean Redis is unreachable or not answering (redis-py's or the OS's)."""
    if isinstance(exc, TimeoutError | ConnectionError | OSError):
        return True
    names = {cls.__name__ for cls in type(exc).__mro__}
    if names & {"ConnectionError", "TimeoutError", "BusyLoadingError"}:
        return True
    return "ResponseError" in names and str(exc).startswith("LOADING")


def jittered_ms(base_seconds: float, spread: float, rng: random.Random) -> int:
    """A TTL of ``base ± spread·base``, so keys written together do not expire together (avalanche)."""
    return max(1, int(base_seconds * 1000 * (1 + rng.uniform(-spread, spread))))


class CircuitBreaker:
    """Stops calling a failing store for a cool-down instead of piling up timeouts.

    Closed: calls go through; ``threshold`` consecutive failures open it. Open: calls are skipped
    until ``cooldown`` has passed. Half-open: exactly one caller (the probe) goes through; its
    success closes the breaker, its failure opens it again. A probe that never reports (its task
    was cancelled) is replaced after another cool-down, so the breaker cannot stick half-open.
    """

    def __init__(
        self, *, threshold: int = 5, cooldown: float = 2.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self.clock = clock
        self.failures = 0
        self.opened_at: float | None = None
        self.probe_started: float | None = None
        self.trips = 0

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half-open" if self.clock() - self.opened_at >= self.cooldown else "open"

    def allow(self) -> bool:
        if self.opened_at is None:
            return True
        now = self.clock()
        if now - self.opened_at < self.cooldown:
            return False
        if self.probe_started is not None and now - self.probe_started < self.cooldown:
            return False
        self.probe_started = now
        return True

    def success(self) -> None:
        self.failures = 0
        self.opened_at = None
        self.probe_started = None

    def failure(self) -> None:
        self.failures += 1
        if self.opened_at is not None or self.failures >= self.threshold:
            if self.opened_at is None:
                self.trips += 1
                log.warning("search_breaker_open", failures=self.failures)
            self.opened_at = self.clock()
            self.probe_started = None


class SingleFlight:
    """One load per key at a time: concurrent callers of the same key share one task.

    The load runs as its own task and callers await it shielded, so a caller that goes away
    (client disconnect) neither cancels the load for the others nor leaves them hanging.
    """

    def __init__(self) -> None:
        self._tasks: dict[Hashable, asyncio.Task[Any]] = {}

    def __len__(self) -> int:
        return len(self._tasks)

    async def run(self, key: Hashable, loader: Callable[[], Awaitable[T]]) -> T:
        task = self._tasks.get(key)
        if task is None:
            task = asyncio.ensure_future(loader())
            self._tasks[key] = task
            task.add_done_callback(lambda t, k=key: self._forget(k, t))  # type: ignore[misc]
        result: T = await asyncio.shield(task)
        return result

    def _forget(self, key: Hashable, task: asyncio.Task[Any]) -> None:
        if self._tasks.get(key) is task:
            del self._tasks[key]
        if not task.cancelled():
            task.exception()  # retrieved here; every waiter still gets it raised


class HotCache:
    """The hottest answers in process memory, each served for at most ``ttl`` seconds (bounded LRU).
    An expired entry is no longer served but stays until evicted, so ``last`` can hand it to the
    rebuild of the same key (which reuses its encoding when nothing in it changed)."""

    def __init__(self, *, ttl: float, max_entries: int, clock: Callable[[], float]) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self.clock = clock
        self._entries: OrderedDict[Hashable, tuple[float, Any]] = OrderedDict()

    def get(self, key: Hashable) -> Any | None:
        entry = self._entries.get(key)
        if entry is None or entry[0] <= self.clock():
            return None
        self._entries.move_to_end(key)
        return entry[1]

    def last(self, key: Hashable) -> Any | None:
        """The value last put for ``key``, expired or not."""
        entry = self._entries.get(key)
        return None if entry is None else entry[1]

    def put(self, key: Hashable, value: Any, *, expires_at: float | None = None) -> None:
        """Keep ``value`` for ``ttl`` seconds, or until ``expires_at`` if that comes sooner."""
        until = self.clock() + self.ttl
        self._entries[key] = (until if expires_at is None else min(until, expires_at), value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()


@dataclass(frozen=True, slots=True)
class StationRef:
    id: int
    name: str
    code: str
    city: str


@dataclass(frozen=True, slots=True)
class Directory:
    """Stations by every term a passenger may type, and the open train-days, as of ``loaded_at``."""

    terms: dict[str, tuple[StationRef, ...]]
    train_days: frozenset[tuple[str, dt.date]]
    fingerprints: dict[dt.date, str]  # per date: changes whenever a train-day opens that date
    loaded_at: float
    version: tuple[int, int] = (0, 0)  # newest station id and newest train-day id when loaded

    def bloom_keys(self) -> Iterable[str]:
        yield from (station_term_key(t) for t in self.terms)
        yield from (train_day_key(code, d.isoformat()) for code, d in self.train_days)


@dataclass(frozen=True, slots=True)
class SearchQuery:
    from_term: str
    to_term: str
    date: dt.date
    kinds: frozenset[str] = frozenset()
    depart_after: int | None = None  # minutes after midnight
    depart_before: int | None = None


@dataclass(frozen=True, slots=True)
class SeatOffer:
    remaining: int
    price_fen: int


@dataclass(frozen=True, slots=True)
class TrainOffer:
    train_code: str
    date: dt.date
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


@dataclass(slots=True)
class _DayTable:
    """A train-day's counts as read at ``read_at``, with the pairs already summed from it."""

    read_at: float
    counts: DayCounts
    pairs: dict[tuple[int, int], dict[str, int]] = field(default_factory=dict)

    def remaining(self, from_index: int, to_index: int) -> dict[str, int]:
        pair = (from_index, to_index)
        found = self.pairs.get(pair)
        if found is None:
            found = self.pairs[pair] = self.counts.remaining(from_index, to_index)
        return found


DayKey = tuple[str, dt.date]
_TableRead = tuple[float, "_DayTable | _Skipped | None"]


@dataclass(frozen=True, slots=True)
class SeatCell:
    name: str
    free: bool


@dataclass(frozen=True, slots=True)
class SeatMapAnswer:
    carriages: list[tuple[int, list[tuple[int, list[SeatCell]]]]]  # carriage → rows → seats
    stale: bool = False


@dataclass(frozen=True, slots=True)
class _DayInfo:
    daily_train_id: int
    train_code: str
    kind: str
    stops: tuple[tuple[int, str], ...]  # (station_id, station_name) by stop index
    classes: frozenset[str]


class _Skipped:
    """A guarded Redis call that did not happen (breaker open) or failed (outage)."""


SKIPPED = _Skipped()


def departure_minutes(departs: str, arrives: str | None, day: int) -> int:
    """Minutes after the service day's midnight at which a train leaves a stop (a stop reached
    before midnight and left after it leaves on the next day)."""
    minutes = day * MINUTES_PER_DAY + clock_minutes(departs)
    if arrives is not None and clock_minutes(departs) < clock_minutes(arrives):
        minutes += MINUTES_PER_DAY
    return minutes


def arrival_minutes(arrives: str, day: int) -> int:
    """Minutes after the service day's midnight at which a train reaches a stop."""
    return day * MINUTES_PER_DAY + clock_minutes(arrives)


def parse_kinds(value: str | None) -> frozenset[str]:
    """``G,D`` → {"G", "D"}; 422 for anything but train kind letters."""
    if not value:
        return frozenset()
    kinds = frozenset(k.strip().upper() for k in value.split(",") if k.strip())
    unknown = sorted(kinds - set(TRAIN_KINDS))
    if unknown or not kinds:
        raise InvalidInput(
            "kind is a comma-separated list of train kinds (G, D, C, K, T, Z, Y).",
            details={"field": "kind", "unknown": unknown, "known": list(TRAIN_KINDS)},
        )
    return kinds


def parse_clock(value: str | None, field_name: str) -> int | None:
    """``HH:MM`` → minutes after midnight; 422 naming the field otherwise."""
    if value is None:
        return None
    try:
        return clock_minutes(value)
    except InvalidInput as exc:
        raise InvalidInput(
            f"{field_name} must be a clock time HH:MM.", details={"field": field_name, "value": value[:16]}
        ) from exc


def check_term(value: str, field_name: str) -> str:
    """A station term as typed: bounded, printable; 422 otherwise (before any store is asked)."""
    term = value.strip()
    check_display_name(term, field_name)
    return term


@dataclass
class SearchService:
    """Search and seat maps for one process (see the module docstring for the read path)."""

    settings: Settings
    sessionmaker: async_sessionmaker[AsyncSession]
    allocator: Allocator
    cache: SearchCache
    clock: Callable[[], float] = time.monotonic
    hot_seconds: float = 1.0
    hot_entries: int = 4096
    refresh_seconds: float = 30.0
    probe_seconds: float = 1.0
    miss_probe_seconds: float = 0.1
    route_ttl_seconds: float = 300.0
    empty_ttl_seconds: float = 15.0
    ttl_spread: float = 0.2
    lock_ms: int = 3000
    redis_timeout: float = 2.0
    redis_concurrency: int = 64
    bloom_shape: BloomShape = field(default_factory=BloomShape)
    rng: random.Random = field(default_factory=random.Random)
    day_loads: dict[tuple[str, dt.date], asyncio.Task[bool]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.breaker = CircuitBreaker(clock=self.clock)
        self.hot = HotCache(ttl=self.hot_seconds, max_entries=self.hot_entries, clock=self.clock)
        self.flights = SingleFlight()
        self.stats: dict[str, int] = defaultdict(int)
        self._directory: Directory | None = None
        self._refresh: asyncio.Future[Directory] | None = None
        self._bloom_stale = False
        self._last_probe = float("-inf")
        self._probe_task: asyncio.Future[bool] | None = None
        self._days: OrderedDict[tuple[str, dt.date], tuple[float, _DayInfo]] = OrderedDict()
        self._layouts: OrderedDict[tuple[int, str], list[tuple[int, int, int, str]]] = OrderedDict()
        self._redis_slots = asyncio.Semaphore(self.redis_concurrency)
        self._tables: OrderedDict[DayKey, _DayTable] = OrderedDict()
        self._window: tuple[dt.date | None, frozenset[dt.date]] = (None, frozenset())
        self._window_until = float("-inf")  # wall-clock time at which to look at the date again
        self._table_reads: dict[DayKey, asyncio.Future[dict[DayKey, _TableRead]]] = {}
        # Route legs are immutable for a key (the key carries the date's fingerprint), so a process
        # keeps its own copy too and skips the Redis round trip; bounded, and refreshed on expiry.
        # Query strings already parsed into queries (the parse is pure): a repeated query string skips
        # parsing and validation. Bounded; the oldest go first.
        self.parsed_queries: dict[bytes, SearchQuery] = {}
        self._route_copies = HotCache(
            ttl=self.route_ttl_seconds * (1 - self.ttl_spread), max_entries=self.hot_entries, clock=self.clock
        )

    # ---- lifecycle ---------------------------------------------------------------------------

    async def aclose(self) -> None:
        for task in (self._refresh, self._probe_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    async def invalidate(self) -> Directory:
        """Reload the directory and rebuild the Bloom filter now (stations or days changed)."""
        self.hot.clear()
        self._days.clear()
        return await self.flights.run("directory", lambda: self._load_directory(force_bloom=True))

    # ---- guarded Redis -----------------------------------------------------------------------

    async def _guarded(self, call: Callable[[], Awaitable[T]]) -> T | _Skipped:
        """Run a Redis call through the breaker with a time limit; SKIPPED when Redis is down."""
        if not self.cache.distributed:
            return await call()
        if not self.breaker.allow():
            self.stats["redis_skipped"] += 1
            return SKIPPED
        try:
            async with self._redis_slots:
                async with asyncio.timeout(self.redis_timeout):
                    result = await call()
        except Exception as exc:
            if not is_cache_outage(exc):
                self.breaker.success()  # Redis answered (e.g. "day not loaded"): it is reachable
                raise
            self.breaker.failure()
            self.stats["redis_failures"] += 1
            return SKIPPED
        self.breaker.success()
        return result

    # ---- directory and Bloom filter ----------------------------------------------------------

    async def directory(self) -> Directory:
        """The current directory; a stale one is served while a fresh one loads in the background.
        A cheap version probe (newest station and train-day ids) runs every ``probe_seconds``, so a
        new station or sale day is seen within about a second without a full reload per request."""
        current = self._directory
        if current is None:
            return await self.flights.run("directory", lambda: self._load_directory(force_bloom=False))
        if self.clock() - self._last_probe >= self.probe_seconds and (
            self._probe_task is None or self._probe_task.done()
        ):
            self._start_probe().add_done_callback(_log_failure)
        if self.clock() - current.loaded_at >= self.refresh_seconds or self._bloom_stale:
            if self._refresh is None or self._refresh.done():
                force = self._bloom_stale
                self._bloom_stale = False
                self._refresh = asyncio.ensure_future(
                    self.flights.run("directory", lambda: self._load_directory(force_bloom=force))
                )
                self._refresh.add_done_callback(_log_failure)
        return current

    def _start_probe(self) -> asyncio.Future[bool]:
        self._last_probe = self.clock()
        self._probe_task = asyncio.ensure_future(self._probe())
        return self._probe_task

    async def _probe(self) -> bool:
        """Reload the directory (and rebuild the Bloom filter) if a station or train-day was added."""
        async with self.sessionmaker() as session:
            version = await _catalog_version(session)
        current = self._directory
        if current is not None and version == current.version:
            return False
        self.hot.clear()
        await self.flights.run("directory", lambda: self._load_directory(force_bloom=True))
        return True

    async def _probe_since(self, arrived: float) -> bool:
        """Make sure the directory is no older than the request before answering "no such thing";
        True if it changed. Probes are shared and at most one per ``miss_probe_seconds`` starts, so a
        flood of made-up names costs a bounded trickle of one-row queries, not one per request."""
        task = self._probe_task
        if task is not None and not task.done():
            changed = await asyncio.shield(task)
            if self._last_probe >= arrived:
                return changed
        if self._last_probe >= arrived:
            return False
        wait = self._last_probe + self.miss_probe_seconds - self.clock()
        if wait > 0:
            await asyncio.sleep(wait)
            task = self._probe_task
            if task is not None and self._last_probe >= arrived:
                return await asyncio.shield(task)
        self.stats["miss_probes"] += 1
        return await asyncio.shield(self._start_probe())

    async def _load_directory(self, *, force_bloom: bool) -> Directory:
        today = dt.date.today()
        self._last_probe = self.clock()
        async with self.sessionmaker() as session:
            version = await _catalog_version(session)
            stations = (
                await session.execute(select(Station.id, Station.name, Station.code, Station.city))
            ).all()
            days = (
                await session.execute(
                    select(DailyTrain.id, DailyTrain.train_code, DailyTrain.service_date).where(
                        DailyTrain.service_date >= today
                    )
                )
            ).all()
        terms: dict[str, list[StationRef]] = defaultdict(list)
        for s in stations:
            ref = StationRef(s.id, s.name, s.code, s.city or "")
            for term in {s.name, s.code, s.city}:
                if term:
                    terms[term].append(ref)
        per_date: dict[dt.date, list[int]] = defaultdict(list)
        for d in days:
            per_date[d.service_date].append(d.id)
        directory = Directory(
            terms={t: tuple(sorted(refs, key=lambda r: r.id)) for t, refs in terms.items()},
            train_days=frozenset((d.train_code, d.service_date) for d in days),
            fingerprints={date: f"{len(ids)}.{max(ids)}" for date, ids in per_date.items()},
            loaded_at=self.clock(),
            version=version,
        )
        self._directory = directory
        self.stats["directory_loads"] += 1
        claimed = await self._guarded(lambda: self.cache.claim("bloom", int(self.refresh_seconds * 800)))
        if force_bloom or claimed is True:
            bits = await asyncio.to_thread(build_bitmap, self.bloom_shape, list(directory.bloom_keys()))
            if not isinstance(await self._guarded(lambda: self.cache.bloom_store(bytes(bits))), _Skipped):
                self.stats["bloom_builds"] += 1
        return directory

    async def _bloom_maybe(self, keys: Sequence[str]) -> list[bool]:
        """Bloom answers for keys the directory lacks; all "maybe" when Redis is unreachable."""
        groups = [self.bloom_shape.positions(k) for k in keys]
        answer = await self._guarded(lambda: self.cache.bloom_test(groups))
        if isinstance(answer, _Skipped):
            return [True for _ in keys]
        return answer

    async def _resolve(self, terms: Sequence[tuple[str, str]]) -> list[tuple[StationRef, ...]]:
        """Stations named by each (term, field); 404 STATION_NOT_FOUND for an unknown one."""
        arrived = self.clock()
        found: list[tuple[StationRef, ...] | None] = []
        for attempt in range(2):
            directory = await self.directory()
            found = [directory.terms.get(t) for t, _ in terms]
            missing = [i for i, refs in enumerate(found) if refs is None]
            if not missing:
                break
            maybe = await self._bloom_maybe([station_term_key(terms[i][0]) for i in missing])
            absent = [terms[i] for i, is_maybe in zip(missing, maybe, strict=True) if not is_maybe]
            if absent:
                if attempt == 0 and await self._probe_since(arrived):
                    continue  # the catalog changed since the directory was loaded: look again
                self.stats["bloom_rejected"] += 1
                raise _station_not_found(*absent[0])
            for i in missing:
                found[i] = await self._lookup_unlisted(*terms[i])
            break
        return [refs for refs in found if refs is not None]

    async def _lookup_unlisted(self, term: str, field_name: str) -> tuple[StationRef, ...]:
        """A Bloom "maybe" the directory does not know: cached "no such thing", else one database read."""
        negative_key = "none:station:" + term
        cached = await self._guarded(lambda: self.cache.get(negative_key))
        if isinstance(cached, bytes):
            self.stats["negative_hits"] += 1
            raise _station_not_found(term, field_name)

        async def load() -> tuple[StationRef, ...]:
            self.stats["station_queries"] += 1
            async with self.sessionmaker() as session:
                rows = (
                    await session.execute(
                        select(Station.id, Station.name, Station.code, Station.city)
                        .where(or_(Station.name == term, Station.code == term, Station.city == term))
                        .order_by(Station.id)
                    )
                ).all()
            refs = tuple(StationRef(r.id, r.name, r.code, r.city or "") for r in rows)
            if not refs:
                ttl = jittered_ms(self.empty_ttl_seconds, self.ttl_spread, self.rng)
                await self._guarded(lambda: self.cache.set(negative_key, b"1", ttl))
            else:
                self._bloom_stale = True  # a new station: refresh the directory and the filter soon
            return refs

        refs = await self.flights.run("station:" + term, load)
        if not refs:
            raise _station_not_found(term, field_name)
        return refs

    # ---- search ------------------------------------------------------------------------------

    async def search(self, query: SearchQuery) -> SearchAnswer:
        """Trains from ``query.from_term`` to ``query.to_term`` on ``query.date``, by departure."""
        return (await self._hot_entry(query)).answer

    def remember_query(self, raw: bytes, query: SearchQuery) -> None:
        """Keep the parse of a query string, so the next request with the same string skips it."""
        memo = self.parsed_queries
        memo[raw] = query
        if len(memo) > self.hot_entries:
            del memo[next(iter(memo))]

    async def search_encoded(
        self, query: SearchQuery, encode: Callable[[SearchAnswer], bytes]
    ) -> tuple[bytes, bool]:
        """The answer as ``encode`` renders it, and whether it is stale; a hot hit reuses the bytes
        encoded for its entry, so the hottest answers are encoded once per entry, not per request."""
        entry = await self._hot_entry(query)
        body = entry.body
        if body is None:
            body = entry.body = encode(entry.answer)
        return body, entry.answer.stale

    async def _hot_entry(self, query: SearchQuery) -> HotAnswer:
        """The hot entry for a query (the query itself is the hot key: hashing it is cheaper than
        encoding it); a miss is built once for all concurrent askers."""
        if query.date not in self._on_sale():
            check_on_sale(self.settings, [query.date])  # raises DATE_NOT_ON_SALE
        if query.from_term == query.to_term:
            raise SameStation(
                "from and to name the same station.",
                details={"from": query.from_term, "to": query.to_term},
            )
        hot = self.hot.get(query)
        if hot is not None:
            self.stats["hot_hits"] += 1
            entry: HotAnswer = hot
            return entry
        return await self.flights.run(("answer", query), lambda: self._answer(query))

    def _on_sale(self) -> frozenset[dt.date]:
        """The sale window, recomputed when the day changes rather than on every request (reading the
        wall clock is cheaper than asking for the date)."""
        if time.time() >= self._window_until:
            today = sales_today()
            if self._window[0] != today:
                self._window = (today, frozenset(sale_window(self.settings, today)))
            # Until the next change of day: midnight, or sooner (a minute) if the clock is odd.
            midnight = dt.datetime.combine(today + dt.timedelta(days=1), dt.time()).timestamp()
            self._window_until = min(midnight, time.time() + 60.0)
        return self._window[1]

    async def _answer(self, query: SearchQuery) -> HotAnswer:
        from_refs, to_refs = await self._resolve([(query.from_term, "from"), (query.to_term, "to")])
        from_ids = sorted({r.id for r in from_refs})
        to_ids = sorted({r.id for r in to_refs})
        if from_ids == to_ids:
            raise SameStation(
                "from and to name the same station.",
                details={"from": query.from_term, "to": query.to_term},
            )
        route_legs = await self.routes(query.date, from_ids, to_ids)
        legs = [leg for leg in route_legs if _leg_matches(leg, query)]
        counts, stale, read_at = await self._counts(query.date, legs)
        expires_at = None if read_at is None else read_at + self.hot_seconds
        previous: HotAnswer | None = self.hot.last(query)
        if (
            previous is not None
            and previous.legs is route_legs
            and previous.counts == counts
            and previous.answer.stale == stale
        ):
            # The same legs (the very cached list: same route key) and the same counts, read just now:
            # the answer is what it was; only its expiry moves on with the counts' read time.
            self.stats["answers_reused"] += 1
            entry = HotAnswer(previous.answer, previous.body, route_legs, counts)
            self.hot.put(query, entry, expires_at=expires_at)
            return entry
        offers = []
        for leg, remaining in zip(legs, counts, strict=True):
            seats = {
                cls: SeatOffer(remaining.get(cls, 0), fen)
                for cls, fen in sorted(
                    leg["prices"].items(),
                    key=lambda kv: SEAT_CLASSES.index(kv[0]) if kv[0] in SEAT_CLASSES else 99,
                )
            }
            offers.append(
                TrainOffer(
                    train_code=leg["code"],
                    date=query.date,
                    from_station=leg["fs"],
                    departs=leg["dep"],
                    from_index=leg["fi"],
                    to_station=leg["ts"],
                    arrives=leg["arr"],
                    to_index=leg["ti"],
                    duration_minutes=leg["arr_min"] - leg["dep_min"],
                    seats=seats,
                )
            )
        entry = HotAnswer(SearchAnswer(tuple(offers), stale), None, route_legs, counts)
        self.hot.put(query, entry, expires_at=expires_at)
        return entry

    async def routes(
        self, date: dt.date, from_ids: Sequence[int], to_ids: Sequence[int]
    ) -> list[dict[str, Any]]:
        """The route index: legs between any of ``from_ids`` and any of ``to_ids`` on ``date``,
        sorted by departure. Cached per key; one loader per missing key across processes."""
        directory = await self.directory()
        if date not in directory.fingerprints and await self._probe_since(self.clock()):
            directory = await self.directory()  # a day opened since the directory was loaded
        fingerprint = directory.fingerprints.get(date, "0")
        pair = f"{','.join(map(str, from_ids))}:{','.join(map(str, to_ids))}"
        key = f"route:{date.isoformat()}:{fingerprint}:{pair}"
        copy: list[dict[str, Any]] | None = self._route_copies.get(key)
        if copy is not None:
            return copy
        legs = await self.flights.run(key, lambda: self._cached_routes(key, date, from_ids, to_ids))
        # Empty answers are kept as long as the shared cache keeps them (a new train that day
        # changes the fingerprint, hence the key); the rest as long as route answers.
        expires_at = None if legs else self.clock() + self.empty_ttl_seconds * (1 - self.ttl_spread)
        self._route_copies.put(key, legs, expires_at=expires_at)
        return legs

    async def _cached_routes(
        self, key: str, date: dt.date, from_ids: Sequence[int], to_ids: Sequence[int]
    ) -> list[dict[str, Any]]:
        cached = await self._guarded(lambda: self.cache.get(key))
        if isinstance(cached, bytes):
            self.stats["route_hits"] += 1
            return _decode_legs(cached)
        if isinstance(cached, _Skipped):
            return await self._load_routes(date, from_ids, to_ids)
        token = uuid.uuid4().hex
        locked = await self._guarded(lambda: self.cache.try_lock(key, token, self.lock_ms))
        if locked is False:
            # Another process is loading this key: wait briefly for its answer, then load ourselves.
            for _ in range(50):
                await asyncio.sleep(0.02)
                cached = await self._guarded(lambda: self.cache.get(key))
                if isinstance(cached, bytes):
                    self.stats["route_waits"] += 1
                    return _decode_legs(cached)
                if isinstance(cached, _Skipped):
                    break
        try:
            legs = await self._load_routes(date, from_ids, to_ids)
            ttl = jittered_ms(
                self.route_ttl_seconds if legs else self.empty_ttl_seconds, self.ttl_spread, self.rng
            )
            await self._guarded(lambda: self.cache.set(key, _encode_legs(legs), ttl))
        finally:
            if locked is True:
                await self._guarded(lambda: self.cache.unlock(key, token))
        return legs

    async def _load_routes(
        self, date: dt.date, from_ids: Sequence[int], to_ids: Sequence[int]
    ) -> list[dict[str, Any]]:
        """One query: the self-join of a day's stops on (service_date, station_id), with prices."""
        self.stats["route_queries"] += 1
        a = aliased(DailyTrainStop)
        b = aliased(DailyTrainStop)
        p = DailyPairInventory
        q = (
            select(
                a.daily_train_id,
                DailyTrain.train_code,
                DailyTrain.kind,
                a.stop_index.label("fi"),
                a.station_name.label("fs"),
                a.departs.label("dep"),
                a.arrives.label("fa"),
                a.day.label("fday"),
                a.km.label("fkm"),
                b.stop_index.label("ti"),
                b.station_name.label("ts"),
                b.arrives.label("arr"),
                b.day.label("tday"),
                b.km.label("tkm"),
                p.seat_class,
                p.price_fen,
            )
            .join(
                b,
                and_(
                    b.daily_train_id == a.daily_train_id, b.service_date == date, b.stop_index > a.stop_index
                ),
            )
            .join(DailyTrain, DailyTrain.id == a.daily_train_id)
            .outerjoin(
                p,
                and_(
                    p.daily_train_id == a.daily_train_id,
                    p.from_index == a.stop_index,
                    p.to_index == b.stop_index,
                ),
            )
            .where(a.service_date == date, a.station_id.in_(list(from_ids)), b.station_id.in_(list(to_ids)))
        )
        async with self.sessionmaker() as session:
            rows = (await session.execute(q)).all()
        legs: dict[tuple[int, int, int], dict[str, Any]] = {}
        for r in rows:
            if r.dep is None or r.arr is None:
                continue
            leg = legs.get((r.daily_train_id, r.fi, r.ti))
            if leg is None:
                leg = legs[(r.daily_train_id, r.fi, r.ti)] = {
                    "id": r.daily_train_id,
                    "code": r.train_code,
                    "kind": r.kind,
                    "fi": r.fi,
                    "fs": r.fs,
                    "dep": r.dep,
                    "dep_min": departure_minutes(r.dep, r.fa, r.fday),
                    "ti": r.ti,
                    "ts": r.ts,
                    "arr": r.arr,
                    "arr_min": arrival_minutes(r.arr, r.tday),
                    "km": r.tkm - r.fkm,
                    "prices": {},
                }
            if r.seat_class is not None:
                leg["prices"][r.seat_class] = r.price_fen
        return sorted(legs.values(), key=lambda leg: (leg["dep_min"], leg["code"], leg["fi"], leg["ti"]))

    # ---- counts ------------------------------------------------------------------------------

    async def _counts(
        self, date: dt.date, legs: Sequence[dict[str, Any]]
    ) -> tuple[list[dict[str, int]], bool, float | None]:
        """Remaining per class for each leg, from the train-days' count snapshots (from the database
        when Redis is down), whether any came from the database, and when the oldest snapshot used
        was read (None if none was used)."""
        keys = list(dict.fromkeys((leg["code"], date) for leg in legs))
        reads = await self._day_tables(keys)
        lost = [k for k, (_, table) in reads.items() if table is None]
        if lost:
            reloaded = [k for k in lost if await self._ensure_loaded(*k)]
            if reloaded:
                reads.update(await self._read_tables(reloaded))
        counts: list[dict[str, int]] = []
        fallback: list[int] = []
        oldest: float | None = None
        for i, leg in enumerate(legs):
            read_at, table = reads[(leg["code"], date)]
            if isinstance(table, _DayTable) and leg["ti"] < table.counts.n_stops:
                counts.append(table.remaining(leg["fi"], leg["ti"]))
                oldest = read_at if oldest is None else min(oldest, read_at)
            else:
                counts.append({})
                fallback.append(i)
        if fallback:
            self.stats["db_counts"] += 1
            from_db = await self._db_remaining(date, [legs[i] for i in fallback])
            for i, remaining in zip(fallback, from_db, strict=True):
                counts[i] = remaining
        return counts, bool(fallback), oldest

    async def _day_tables(self, keys: Sequence[DayKey]) -> dict[DayKey, _TableRead]:
        """Each train-day's counts no older than ``hot_seconds``: fresh snapshots from memory, the
        rest in one read shared with any read of the same day already under way (single flight)."""
        now = self.clock()
        found: dict[DayKey, _TableRead] = {}
        waiting: dict[DayKey, asyncio.Future[dict[DayKey, _TableRead]]] = {}
        missing: list[DayKey] = []
        for key in keys:
            table = self._tables.get(key)
            if table is not None and table.read_at + self.hot_seconds > now:
                found[key] = (table.read_at, table)
            elif key in self._table_reads:
                waiting[key] = self._table_reads[key]
            else:
                missing.append(key)
        if missing:
            read = asyncio.ensure_future(self._read_tables(missing))
            for key in missing:
                self._table_reads[key] = waiting[key] = read
            read.add_done_callback(lambda t, ks=missing: self._forget_reads(ks, t))  # type: ignore[misc]
        for key, future in waiting.items():
            found[key] = (await asyncio.shield(future))[key]
        return found

    def _forget_reads(self, keys: Sequence[DayKey], read: asyncio.Future[Any]) -> None:
        for key in keys:
            if self._table_reads.get(key) is read:
                del self._table_reads[key]
        if not read.cancelled():
            read.exception()  # retrieved here; every waiter still gets it raised

    async def _read_tables(self, keys: Sequence[DayKey]) -> dict[DayKey, _TableRead]:
        """One round trip for the counts of ``keys``; None for a day the allocator lacks, SKIPPED
        for all of them when Redis is unreachable."""
        read_at = self.clock()  # before the read: the snapshot is at least this fresh
        self.stats["count_reads"] += 1
        result = await self._guarded(lambda: self.allocator.count_tables(keys))
        if isinstance(result, _Skipped):
            return {key: (read_at, SKIPPED) for key in keys}
        out: dict[DayKey, _TableRead] = {}
        for key, counts in zip(keys, result, strict=True):
            if counts is None:
                self._tables.pop(key, None)
                out[key] = (read_at, None)
                continue
            old = self._tables.get(key)
            if old is not None and old.counts == counts:
                # Nothing sold or released since the last read: the sums already made still hold.
                table = self._tables[key] = _DayTable(read_at, old.counts, old.pairs)
            else:
                table = self._tables[key] = _DayTable(read_at, counts)
            self._tables.move_to_end(key)
            out[key] = (read_at, table)
        while len(self._tables) > self.hot_entries:
            self._tables.popitem(last=False)
        return out

    async def _ensure_loaded(self, code: str, date: dt.date) -> bool:
        """Put a train-day the allocator lost back (e.g. after a Redis restart); one loader per day."""
        if self.cache.distributed and self.breaker.state != "closed":
            return False
        try:
            return await self.flights.run(f"load:{code}:{date}", lambda: ensure_day_loaded(self, code, date))
        except Exception as exc:
            if not is_cache_outage(exc):
                raise
            self.breaker.failure()
            return False

    async def _db_remaining(self, date: dt.date, legs: Sequence[dict[str, Any]]) -> list[dict[str, int]]:
        """Seats free per leg and class from the active tickets (the admin inventory's arithmetic)."""
        ids = sorted({leg["id"] for leg in legs})
        async with self.sessionmaker() as session:
            seat_rows = (
                await session.execute(
                    select(DailySeat.daily_train_id, DailySeat.seat_class, func.count())
                    .where(DailySeat.daily_train_id.in_(ids))
                    .group_by(DailySeat.daily_train_id, DailySeat.seat_class)
                )
            ).all()
            tickets = (
                await session.execute(
                    select(
                        Ticket.daily_train_id,
                        Ticket.seat_class,
                        Ticket.daily_seat_id,
                        Ticket.from_index,
                        Ticket.to_index,
                    ).where(Ticket.daily_train_id.in_(ids), Ticket.status.in_(ACTIVE_TICKET_STATUSES))
                )
            ).all()
        seats = {(r[0], r[1]): int(r[2]) for r in seat_rows}
        result = []
        for leg in legs:
            journey = journey_mask(leg["fi"], leg["ti"])
            taken: dict[str, set[int]] = defaultdict(set)
            for t in tickets:
                if t.daily_train_id == leg["id"] and journey_mask(t.from_index, t.to_index) & journey:
                    taken[t.seat_class].add(t.daily_seat_id)
            result.append(
                {cls: n - len(taken[cls]) for (train_id, cls), n in seats.items() if train_id == leg["id"]}
            )
        return result

    # ---- seat map ----------------------------------------------------------------------------

    async def seat_map(
        self, train_code: str, date: dt.date, from_term: str, to_term: str, seat_class: str
    ) -> SeatMapAnswer:
        """Every seat of a class on a train-day, free or not for the journey from → to."""
        check_on_sale(self.settings, [date])
        day = await self._train_day(train_code, date)
        from_refs, to_refs = await self._resolve([(from_term, "from"), (to_term, "to")])
        fi = _stop_of(day, from_refs, "from", first=True)
        ti = _stop_of(day, to_refs, "to", first=False)
        if fi >= ti:
            raise BadJourney(
                f"{day.stops[fi][1]} does not come before {day.stops[ti][1]} on {train_code}.",
                details={"from": from_term, "to": to_term},
            )
        if seat_class not in day.classes:
            raise SeatClassNotOnTrain(
                f"{train_code} has no {seat_class} seats.",
                details={"field": "seat_class", "classes": sorted(day.classes)},
            )
        layout = await self._layout(day.daily_train_id, seat_class)
        masks, stale = await self._masks(day, date, seat_class)
        journey = journey_mask(fi, ti)
        carriages: dict[int, dict[int, list[SeatCell]]] = defaultdict(lambda: defaultdict(list))
        for index, carriage, row, letter in layout:
            mask = masks[index] if index < len(masks) else 0
            carriages[carriage][row].append(SeatCell(seat_name(carriage, row, letter), mask & journey == 0))
        return SeatMapAnswer(
            [(c, [(r, cells) for r, cells in sorted(rows.items())]) for c, rows in sorted(carriages.items())],
            stale,
        )

    async def _train_day(self, train_code: str, date: dt.date) -> _DayInfo:
        """A train-day's stops and classes; 404 TRAIN_NOT_FOUND without a database read when the
        directory and the Bloom filter both say it is not open."""
        cached = self._days.get((train_code, date))
        if cached is not None and cached[0] > self.clock():
            return cached[1]
        directory = await self.directory()
        if (train_code, date) not in directory.train_days:
            (maybe,) = await self._bloom_maybe([train_day_key(train_code, date.isoformat())])
            if not maybe and not await self._probe_since(self.clock()):
                self.stats["bloom_rejected"] += 1
                raise _train_not_found(train_code, date)

        async def load() -> _DayInfo | None:
            async with self.sessionmaker() as session:
                daily = (
                    await session.execute(
                        select(DailyTrain).where(
                            DailyTrain.train_code == train_code, DailyTrain.service_date == date
                        )
                    )
                ).scalar_one_or_none()
                if daily is None:
                    return None
                stops = (
                    await session.execute(
                        select(DailyTrainStop.station_id, DailyTrainStop.station_name)
                        .where(DailyTrainStop.daily_train_id == daily.id)
                        .order_by(DailyTrainStop.stop_index)
                    )
                ).all()
            classes = frozenset(str(c.get("seat_class")) for c in daily.carriages or [])
            return _DayInfo(
                daily.id, daily.train_code, daily.kind, tuple((s[0], s[1]) for s in stops), classes
            )

        info = await self.flights.run(f"day:{train_code}:{date}", load)
        if info is None:
            raise _train_not_found(train_code, date)
        self._days[(train_code, date)] = (self.clock() + self.route_ttl_seconds, info)
        while len(self._days) > 2048:
            self._days.popitem(last=False)
        return info

    async def _layout(self, daily_train_id: int, seat_class: str) -> list[tuple[int, int, int, str]]:
        """(seat_index, carriage, row, letter) of a class, from ``daily_seat`` (frozen per day)."""
        key = (daily_train_id, seat_class)
        layout = self._layouts.get(key)
        if layout is not None:
            return layout

        async def load() -> list[tuple[int, int, int, str]]:
            async with self.sessionmaker() as session:
                rows = (
                    await session.execute(
                        select(DailySeat.seat_index, DailySeat.carriage, DailySeat.seat_row, DailySeat.letter)
                        .where(DailySeat.daily_train_id == daily_train_id, DailySeat.seat_class == seat_class)
                        .order_by(DailySeat.seat_index)
                    )
                ).all()
            return [(r[0], r[1], r[2], r[3]) for r in rows]

        layout = await self.flights.run(f"layout:{daily_train_id}:{seat_class}", load)
        self._layouts[key] = layout
        while len(self._layouts) > 512:
            self._layouts.popitem(last=False)
        return layout

    async def _masks(self, day: _DayInfo, date: dt.date, seat_class: str) -> tuple[list[int], bool]:
        for attempt in range(2):
            try:
                result = await self._guarded(lambda: self.allocator.masks(day.train_code, date))
            except NotFound:
                if attempt or not await self._ensure_loaded(day.train_code, date):
                    break
                continue
            if not isinstance(result, _Skipped):
                return list(result.get(seat_class, [])), False
            break
        async with self.sessionmaker() as session:
            sold = await active_masks(session, day.daily_train_id)
        by_seat = sold.get(seat_class, {})
        layout = await self._layout(day.daily_train_id, seat_class)
        return [by_seat.get(index, 0) for index, *_ in layout], True


async def _catalog_version(session: AsyncSession) -> tuple[int, int]:
    """Newest station id and newest train-day id: two index lookups in one statement."""
    row = (
        await session.execute(
            select(
                select(func.max(Station.id)).scalar_subquery(),
                select(func.max(DailyTrain.id)).scalar_subquery(),
            )
        )
    ).one()
    return int(row[0] or 0), int(row[1] or 0)


def _leg_matches(leg: dict[str, Any], query: SearchQuery) -> bool:
    if query.kinds and leg["kind"] not in query.kinds:
        return False
    departs = clock_minutes(leg["dep"])
    if query.depart_after is not None and departs < query.depart_after:
        return False
    return not (query.depart_before is not None and departs > query.depart_before)


def _stop_of(day: _DayInfo, refs: Sequence[StationRef], field_name: str, *, first: bool) -> int:
    ids = {r.id for r in refs}
    indexes = [i for i, (station_id, _) in enumerate(day.stops) if station_id in ids]
    if not indexes:
        raise StationNotOnTrain(
            f"{refs[0].name} is not a stop of {day.train_code}.",
            details={"field": field_name, "station": refs[0].name},
        )
    return indexes[0] if first else indexes[-1]


def _encode_legs(legs: list[dict[str, Any]]) -> bytes:
    return json.dumps(legs, ensure_ascii=False, separators=(",", ":")).encode()


def _decode_legs(blob: bytes) -> list[dict[str, Any]]:
    legs: list[dict[str, Any]] = json.loads(blob)
    return legs


def _station_not_found(term: str, field_name: str) -> NotFound:
    return StationNotFound(
        f"No station or city is called {term!r}.",
        details={"field": field_name, "station": term},
    )


def _train_not_found(train_code: str, date: dt.date) -> NotFound:
    return TrainNotFound(
        f"{train_code} does not run on {date.isoformat()} (or is not on sale).",
        details={"train_code": train_code, "date": date.isoformat()},
    )


def _log_failure(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("search_directory_refresh_failed", error=repr(task.exception())[:300])
