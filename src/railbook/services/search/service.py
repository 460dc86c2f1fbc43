"""Search: trains between two stations on a day, with what remains in each seat class, and seat maps.

Read path, cheapest first:
1. a hot in-process answer cache (each answer at most ``hot_seconds`` old, 1 s by default);
2. station terms resolved through the in-process station directory and the shared Bloom filter
   (``directory.py``): a flood of made-up names never reaches the database;
3. the route index (``routes.py``): station pairs + date → legs, cached with randomised expiry,
   one loader per key across processes;
4. remaining counts from per-train-day snapshots of the allocator's run tables (``counts.py``); an
   answer built from them expires with its oldest snapshot, so counts lag the allocator by at most
   ``hot_seconds`` (1 s) plus the orders in flight.

A commit, cancellation, refund or change made in any process reaches every process's snapshots at
once: ``train_days_changed`` drops this process's and announces the days on the change feed
(``ports.SearchChangeFeed``; Redis pub/sub in distributed mode, see ``adapters/redis/search_feed.py``
for why pub/sub and not a counter read per search), which every API process listens to.

A hot hit costs no database query and no Redis round trip; the API keeps the encoded body beside
the answer (``search_encoded``), so a hit is not re-serialised either. An answer rebuilt once its
bound has passed that finds the same route legs and the same counts (nothing sold on those legs
meanwhile) keeps the previous answer and its encoding, with the new read time.

When Redis fails, a circuit breaker stops asking it for a cool-down (``outage.py``); meanwhile
routes come from the database and counts from the active tickets (the system of record), and the
answer is marked stale. The directory and the Bloom filter are rebuilt every ``refresh_seconds``
(the catalog and sales services do not notify search): a station or day added since is still found
through the "maybe" path and the directory's double-check, at the cost of one database read.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import random
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from railbook.config import Settings
from railbook.domain.bloom import BloomShape
from railbook.domain.errors import SameStation
from railbook.domain.fees import departure_at
from railbook.domain.pricing import fares_by_type
from railbook.domain.sale import sale_closed
from railbook.domain.seating import SEAT_CLASSES
from railbook.domain.timetable import MINUTES_PER_DAY, boarding_date, clock_minutes
from railbook.kit.caching import CircuitBreaker, HotCache, SingleFlight
from railbook.kit.clock import beijing_today, next_beijing_midnight, utcnow
from railbook.services.ports import Allocator
from railbook.services.sales.loading import ensure_day_loaded
from railbook.services.sales.ports import DayRecords
from railbook.services.sales.window import check_on_sale, sale_window
from railbook.services.search.answers import HotAnswer, SearchAnswer, SeatMapAnswer, SeatOffer, TrainOffer
from railbook.services.search.counts import DayKey, RemainingCounts
from railbook.services.search.directory import Directory, StationDirectory
from railbook.services.search.outage import SharedStoreGuard
from railbook.services.search.ports import RouteStore, SearchCache, SearchChangeFeed, SeatStore
from railbook.services.search.query import SearchQuery
from railbook.services.search.routes import Leg, RouteIndex
from railbook.services.search.seat_map import SeatMaps
from railbook.services.search.station_names import StationName
from railbook.services.search.transfers import Transfer, find_transfers

__all__ = ["SearchQuery", "SearchService"]


@dataclass
class SearchService:
    """Search and seat maps for one process (see the module docstring for the read path)."""

    settings: Settings
    # Not read here: the sales day loader (``ensure_day_loaded``) takes it from this service.
    day_records: DayRecords
    allocator: Allocator
    cache: SearchCache
    route_store: RouteStore
    seat_store: SeatStore
    clock: Callable[[], float] = time.monotonic
    now: Callable[[], dt.datetime] = utcnow  # wall-clock time, for the sale cut-off
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
    # Changes made by other processes (None: this process is the only one that changes anything).
    feed: SearchChangeFeed | None = None

    def __post_init__(self) -> None:
        self._listener: asyncio.Task[None] | None = None
        self.breaker = CircuitBreaker(name="search", clock=self.clock)
        self.hot = HotCache(ttl=self.hot_seconds, max_entries=self.hot_entries, clock=self.clock)
        self.flights = SingleFlight()
        self.stats: dict[str, int] = defaultdict(int)
        self._window: tuple[dt.date | None, frozenset[dt.date]] = (None, frozenset())
        self._window_until = float("-inf")  # wall-clock time at which to look at the date again
        # Query strings already parsed into queries (the parse is pure): a repeated query string skips
        # parsing and validation. Bounded; the oldest go first.
        self.parsed_queries: dict[bytes, SearchQuery] = {}
        self.guard = SharedStoreGuard(
            self.cache,
            self.breaker,
            self.stats,
            timeout=self.redis_timeout,
            concurrency=self.redis_concurrency,
        )
        self.stations = StationDirectory(
            store=self.route_store,
            cache=self.cache,
            guard=self.guard,
            flights=self.flights,
            hot=self.hot,
            stats=self.stats,
            clock=self.clock,
            rng=self.rng,
            bloom_shape=self.bloom_shape,
            refresh_seconds=self.refresh_seconds,
            probe_seconds=self.probe_seconds,
            miss_probe_seconds=self.miss_probe_seconds,
            empty_ttl_seconds=self.empty_ttl_seconds,
            ttl_spread=self.ttl_spread,
        )
        self.route_index = RouteIndex(
            store=self.route_store,
            cache=self.cache,
            guard=self.guard,
            directory=self.stations,
            flights=self.flights,
            stats=self.stats,
            clock=self.clock,
            rng=self.rng,
            route_ttl_seconds=self.route_ttl_seconds,
            empty_ttl_seconds=self.empty_ttl_seconds,
            ttl_spread=self.ttl_spread,
            lock_ms=self.lock_ms,
            max_entries=self.hot_entries,
        )
        self.counts = RemainingCounts(
            allocator=self.allocator,
            seats=self.seat_store,
            guard=self.guard,
            flights=self.flights,
            load_day=functools.partial(ensure_day_loaded, self),
            stats=self.stats,
            clock=self.clock,
            hot_seconds=self.hot_seconds,
            max_entries=self.hot_entries,
        )
        self.seat_maps = SeatMaps(
            settings=self.settings,
            allocator=self.allocator,
            routes=self.route_store,
            seats=self.seat_store,
            guard=self.guard,
            directory=self.stations,
            counts=self.counts,
            flights=self.flights,
            stats=self.stats,
            clock=self.clock,
            day_ttl_seconds=self.route_ttl_seconds,
        )

    # ---- lifecycle ---------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Stop the directory's background work and the change feed's listener."""
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
            self._listener = None
        await self.stations.aclose()

    def listen_for_changes(self) -> None:
        """Start following the changes other processes announce (an API process, once at start-up)."""
        if self.feed is not None and self._listener is None:
            self._listener = asyncio.create_task(
                self.feed.listen(self.counts.forget, self._forget_all), name="search-change-feed"
            )

    def _forget_all(self) -> None:
        """Announcements may have been missed: no snapshot or hot answer taken before is trusted."""
        self.counts.forget(list(self.counts.known_days()))
        self.hot.clear()

    async def invalidate(self) -> Directory:
        """Reload the directory and rebuild the Bloom filter now (stations or days changed)."""
        self.hot.clear()
        self.seat_maps.forget_days()
        return await self.stations.reload()

    async def directory(self) -> Directory:
        """The current station directory (see ``StationDirectory.current``)."""
        return await self.stations.current()

    async def train_days_changed(self, days: Iterable[DayKey]) -> None:
        """What these train-days have left changed (a commit, a cancellation, a refund, a change):
        their count snapshots go, and an answer built from one is not served again, in this process
        and (through the change feed) in every other."""
        days = list(days)
        self.counts.forget(days)
        if self.feed is None or not days:
            return
        try:
            await self.feed.publish(days)
        except Exception as exc:
            if not self.cache.is_outage(exc):
                raise
            # Redis is down: other processes' snapshots still expire within ``hot_seconds``.
            self.stats["feed_publish_failed"] += 1

    async def station_names(self, prefix: str) -> list[StationName]:
        """Stations whose name, pinyin, initials or telegraph code starts with ``prefix``, best first,
        at most 20 (an empty list for a prefix nothing matches)."""
        return await self.stations.names_starting(prefix)

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

    async def routes(self, date: dt.date, from_ids: Sequence[int], to_ids: Sequence[int]) -> list[Leg]:
        """The route index: legs between any of ``from_ids`` and any of ``to_ids`` on ``date``,
        sorted by departure."""
        return await self.route_index.legs(date, from_ids, to_ids)

    async def seat_map(
        self, train_code: str, date: dt.date, from_term: str, to_term: str, seat_class: str
    ) -> SeatMapAnswer:
        """Every seat of a class on a train-day, free or not for the journey from → to."""
        return await self.seat_maps.seat_map(train_code, date, from_term, to_term, seat_class)

    async def transfers(self, from_term: str, to_term: str, date: dt.date) -> list[Transfer]:
        """Journeys with one change of train boarded on ``date`` (``transfers.py``)."""
        return await find_transfers(self, from_term, to_term, date)

    def check_date(self, date: dt.date) -> None:
        """422 DATE_NOT_ON_SALE for a boarding date outside the sale window."""
        if date not in self._on_sale():
            check_on_sale(self.settings, [date], today=self._window[0])

    def offer(self, leg: Leg, remaining: dict[str, int], boarding: dt.date) -> TrainOffer:
        """A leg of the route index as a search result."""
        return offer_of(leg, remaining, boarding)

    async def _hot_entry(self, query: SearchQuery) -> HotAnswer:
        """The hot entry for a query (the query itself is the hot key: hashing it is cheaper than
        encoding it); a miss is built once for all concurrent askers."""
        self.check_date(query.date)  # raises DATE_NOT_ON_SALE
        if query.from_term == query.to_term:
            raise SameStation(
                "from and to name the same station.",
                details={"from": query.from_term, "to": query.to_term},
            )
        hot: HotAnswer | None = self.hot.get(query)
        if hot is not None and self.counts.unchanged(hot.stamp):
            self.stats["hot_hits"] += 1
            return hot
        return await self.flights.run(("answer", query), lambda: self._answer(query))

    def _on_sale(self) -> frozenset[dt.date]:
        """The sale window, recomputed when the Beijing day changes rather than on every request (reading
        the wall clock is cheaper than asking for the date)."""
        if time.time() >= self._window_until:
            now = self.now()
            today = beijing_today(now)
            if self._window[0] != today:
                self._window = (today, frozenset(sale_window(self.settings, today)))
            # Until the next change of day: midnight in Beijing, or sooner (a minute) if the clock is odd.
            self._window_until = min(next_beijing_midnight(now).timestamp(), time.time() + 60.0)
        return self._window[1]

    async def _answer(self, query: SearchQuery) -> HotAnswer:
        from_refs, to_refs = await self.stations.resolve([(query.from_term, "from"), (query.to_term, "to")])
        from_ids = sorted({r.id for r in from_refs})
        to_ids = sorted({r.id for r in to_refs})
        if from_ids == to_ids:
            raise SameStation(
                "from and to name the same station.",
                details={"from": query.from_term, "to": query.to_term},
            )
        route_legs = await self.route_index.legs(query.date, from_ids, to_ids)
        closed = self.sale_closed_check(query.date)
        open_legs = tuple(
            i for i, leg in enumerate(route_legs) if _leg_matches(leg, query) and not closed(leg)
        )
        legs = [route_legs[i] for i in open_legs]
        stamp = self.counts.stamp(legs)  # before the read: a change during it makes the answer old
        counts, stale, read_at = await self.counts.for_legs(legs)
        expires_at = None if read_at is None else read_at + self.hot_seconds
        previous: HotAnswer | None = self.hot.last(query)
        if (
            previous is not None
            and previous.legs is route_legs
            and previous.open_legs == open_legs
            and previous.counts == counts
            and previous.answer.stale == stale
        ):
            # The same legs (the very cached list: same route key) and the same counts, read just now:
            # the answer is what it was; only its expiry moves on with the counts' read time.
            self.stats["answers_reused"] += 1
            entry = HotAnswer(previous.answer, previous.body, route_legs, counts, open_legs, stamp)
            self.hot.put(query, entry, expires_at=expires_at)
            return entry
        offers = tuple(
            offer_of(leg, remaining, query.date) for leg, remaining in zip(legs, counts, strict=True)
        )
        entry = HotAnswer(SearchAnswer(offers, stale), None, route_legs, counts, open_legs, stamp)
        self.hot.put(query, entry, expires_at=expires_at)
        return entry

    def sale_closed_check(self, boarding: dt.date) -> Callable[[Leg], bool]:
        """Whether sale has closed for a leg boarded on ``boarding`` (departed, or inside
        ``SALE_CUTOFF_MINUTES``, Beijing time); the clock is read once per answer."""
        now = self.now()
        if boarding > beijing_today(now) + dt.timedelta(days=1):
            return _never  # every train of that date leaves more than a day from now
        cutoff = self.settings.sale_cutoff_minutes
        return lambda leg: sale_closed(departure_at(boarding, leg["dep"]), now, cutoff)


def _never(leg: Leg) -> bool:
    return False


@functools.lru_cache(maxsize=8192)
def _fares(adult_fen: int, seat_class: str) -> dict[str, int]:
    return fares_by_type(adult_fen, seat_class)


def _class_order(item: tuple[str, int]) -> int:
    return SEAT_CLASSES.index(item[0]) if item[0] in SEAT_CLASSES else 99


def offer_of(leg: Leg, remaining: dict[str, int], boarding: dt.date) -> TrainOffer:
    """A leg of the route index as an offer: seats left and fares per class, its dates."""
    service = dt.date.fromisoformat(leg["sd"])
    return TrainOffer(
        train_code=leg["code"],
        date=boarding,
        service_date=service,
        arrival_date=boarding_date(service, leg["arr_min"] // MINUTES_PER_DAY),
        from_station=leg["fs"],
        departs=leg["dep"],
        from_index=leg["fi"],
        to_station=leg["ts"],
        arrives=leg["arr"],
        to_index=leg["ti"],
        duration_minutes=leg["arr_min"] - leg["dep_min"],
        seats={
            cls: SeatOffer(remaining.get(cls, 0), fen, _fares(fen, cls))
            for cls, fen in sorted(leg["prices"].items(), key=_class_order)
        },
    )


def _leg_matches(leg: Leg, query: SearchQuery) -> bool:
    if query.kinds and leg["kind"] not in query.kinds:
        return False
    departs = clock_minutes(leg["dep"])
    if query.depart_after is not None and departs < query.depart_after:
        return False
    return not (query.depart_before is not None and departs > query.depart_before)
