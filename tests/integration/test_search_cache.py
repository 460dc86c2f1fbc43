"""Search caches against real PostgreSQL and Redis: Bloom filter, cached "no such thing", single
flight, randomised expiry, the hot-answer bound, agreement with the allocator, and the Redis outage."""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import redis
from asgi_lifespan import LifespanManager
from sqlalchemy import event, select

from railbook.adapters.db.models import Station, Train
from railbook.adapters.embedded.cache import InProcessSearchCache
from railbook.adapters.redis.cache import RedisSearchCache, is_redis_outage
from railbook.api.app import create_app
from railbook.bootstrap import Container
from railbook.config import Settings
from railbook.domain.bloom import station_term_key
from railbook.domain.errors import NotFound
from railbook.domain.seating import AllocationRequest, PassengerSeatRequest, journey_mask
from railbook.kit.clock import beijing_today
from railbook.services.catalog.imports import import_timetable
from railbook.services.sales.loading import ensure_day_loaded
from railbook.services.sales.opening import open_sale_days
from railbook.services.search.service import SearchQuery, SearchService
from tests.conftest import fresh_pg_database
from tests.naming import station_code, train_code
from tests.support import container_for

DAY = beijing_today() + dt.timedelta(days=2)


class FakeClock:
    """Monotonic time the test moves by hand, so time bounds are shown without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Network:
    stations: list[str]  # stop names of the train, in order
    codes: list[str]
    city: str  # the city of stops 0 and 1
    train: str
    night_train: str


def settings_for(database_url: str, redis_url: str | None) -> Settings:
    return Settings(
        database_url=database_url,
        redis_url=redis_url,
        jwt_secret="t" * 40,
        rate_limits="off",
        load_sample_data=False,
    )


async def seed_network(container: Container, date: dt.date = DAY) -> Network:
    """A city with two stations, four stops of a G train and an overnight K train, opened on ``date``."""
    async with container.sessionmaker() as session:
        used_codes = set((await session.execute(select(Station.code))).scalars().all())
        used_trains = set((await session.execute(select(Train.code))).scalars().all())
    codes: list[str] = []
    while len(codes) < 5:
        code = station_code()
        if code not in used_codes and code not in codes:
            codes.append(code)
    tag = uuid.uuid4().hex[:8]
    names = [f"测{tag}站{i}" for i in range(5)]
    city = f"城{tag}"
    stations = [
        {"name": n, "code": c, "city": city if i < 2 else f"市{tag}{i}"}
        for i, (n, c) in enumerate(zip(names, codes, strict=True))
    ]
    train, night = "", ""
    while not train or train in used_trains:
        train = train_code("G")
    while not night or night in used_trains or night[1:] == train[1:]:
        night = train_code("K")
    g = {
        "code": train,
        "kind": "G",
        "carriages": [
            {"carriage": 1, "seat_class": "business", "rows": 2},
            {"carriage": 2, "seat_class": "second", "rows": 4},
        ],
        "stops": [
            {"station": names[0], "departs": "08:00", "km": 0},
            {"station": names[1], "arrives": "08:30", "departs": "08:32", "km": 60},
            {"station": names[2], "arrives": "09:40", "departs": "09:42", "km": 400},
            {"station": names[3], "arrives": "11:05", "km": 800},
        ],
    }
    k = {
        "code": night,
        "kind": "K",
        "carriages": [{"carriage": 1, "seat_class": "hard_sleeper", "rows": 2}],
        "stops": [
            {"station": names[4], "departs": "21:50", "km": 0},
            {"station": names[0], "arrives": "22:55", "departs": "23:05", "km": 90},
            {"station": names[3], "arrives": "06:35", "day": 1, "km": 700},
        ],
    }
    await import_timetable(container, {"stations": stations, "trains": [g, k]})
    await open_sale_days(container, [date])
    return Network(names[:4], codes, city, train, night)


@pytest.fixture(scope="module")
def module_pg_url() -> Iterator[str]:
    """A database of this module's own: the session's apps run schedulers that open sale days in the
    shared one, and a search service rightly reloads its directory on such news, which would blur what
    these tests count."""
    with fresh_pg_database() as url:
        yield url


@pytest.fixture(scope="module")
async def container(module_pg_url: str, module_redis_url: str) -> AsyncIterator[Container]:
    async with container_for(settings_for(module_pg_url, module_redis_url)) as c:
        yield c


@pytest.fixture(scope="module")
async def net(container: Container) -> Network:
    return await seed_network(container)


def fresh_service(container: Container, clock: FakeClock | None = None, **kw: Any) -> SearchService:
    """A search service of its own (empty in-process caches), as a new process would have."""
    return SearchService(
        container.settings,
        container.day_records,
        container.allocator,
        RedisSearchCache(container.redis),
        container.search_routes,
        container.search_seats,
        clock=clock or FakeClock(),
        **kw,
    )


class QueryLog:
    """Every SQL statement the engine sends, via SQLAlchemy's ``before_cursor_execute`` event."""

    def __init__(self, container: Container) -> None:
        self.engine = container.engine.sync_engine
        self.statements: list[str] = []

    def _record(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self.statements.append(statement)

    def __enter__(self) -> QueryLog:
        event.listen(self.engine, "before_cursor_execute", self._record)
        return self

    def __exit__(self, *exc: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._record)

    def count(self, needle: str = "") -> int:
        return sum(
            1
            for s in self.statements
            if needle in s
            and not s.lstrip().upper().startswith(("BEGIN", "COMMIT", "ROLLBACK", "SELECT PG_", "SELECT 1"))
        )


def q(from_term: str, to_term: str, date: dt.date = DAY, **kw: Any) -> SearchQuery:
    return SearchQuery(from_term, to_term, date, **kw)


async def test_search_by_name_code_and_city(container: Container, net: Network) -> None:
    service = fresh_service(container)
    by_name = await service.search(q(net.stations[0], net.stations[3]))
    by_code = await service.search(q(net.codes[0], net.codes[3]))
    assert [o.train_code for o in by_name.offers] == [net.train, net.night_train]  # 08:00 before 23:05
    assert by_name.offers == by_code.offers
    g, k = by_name.offers
    assert (g.from_index, g.to_index, g.departs, g.arrives, g.duration_minutes) == (
        0,
        3,
        "08:00",
        "11:05",
        185,
    )
    assert g.seats["business"].remaining == 6 and g.seats["second"].remaining == 20
    assert g.seats["second"].price_fen == 36800  # 800 km × 0.46 yuan
    assert (k.from_index, k.to_index, k.duration_minutes) == (1, 2, 7 * 60 + 30)  # overnight
    city = await service.search(q(net.city, net.stations[2]))
    assert [(o.from_station, o.to_station) for o in city.offers] == [
        (net.stations[0], net.stations[2]),
        (net.stations[1], net.stations[2]),
    ]
    assert not by_name.stale


async def test_flood_of_made_up_names_never_reaches_the_database(container: Container, net: Network) -> None:
    clock = FakeClock()
    service = fresh_service(container, clock)
    await service.search(q(net.stations[0], net.stations[1]))  # directory and Bloom filter loaded

    async def flood() -> None:
        for _ in range(1000):
            with pytest.raises(NotFound) as caught:
                await service.search(q(f"假站{uuid.uuid4().hex[:10]}", net.stations[1]))
            assert caught.value.code == "STATION_NOT_FOUND"

    with QueryLog(container) as log:
        await flood()
    assert log.count() == 0
    assert service.stats["bloom_rejected"] == 1000
    # Later on, before saying "no such station" the directory is checked for news (a station added
    # since): one tiny version query per miss_probe_seconds, however many made-up names arrive.
    clock.advance(service.miss_probe_seconds)
    with QueryLog(container) as log:
        await flood()
    assert log.count() == 1 and "max(station.id)" in log.statements[0]
    assert await container.redis.exists("search:bloom")  # built by whichever process claimed the rebuild


async def test_a_station_added_while_a_reload_is_due_is_found(container: Container, net: Network) -> None:
    """A request that finds the directory due for its background reload (and no version probe due)
    starts that reload; a term the old directory lacks waits for it rather than being told "no such
    station" by a directory read before the station existed."""
    clock = FakeClock()
    service = fresh_service(container, clock)
    await service.search(q(net.stations[0], net.stations[1]))  # directory and Bloom filter loaded
    name = f"新{uuid.uuid4().hex[:8]}站"
    async with container.sessionmaker() as session, session.begin():
        used = set((await session.execute(select(Station.code))).scalars().all())
        code = next(c for c in iter(station_code, None) if c not in used)
        session.add(Station(name=name, code=code))
    clock.advance(service.refresh_seconds)  # the directory is due for a reload ...
    service.stations._last_probe = clock()  # ... and a version probe has just run: none is due
    found = await service.search(q(name, net.stations[1]))
    assert not found.offers  # known, though no train stops there (before: 404 STATION_NOT_FOUND)


async def test_bloom_maybe_is_answered_by_the_database_once_then_by_the_cached_no(
    container: Container, net: Network
) -> None:
    service = fresh_service(container)
    await service.directory()
    ghost = f"幽灵{uuid.uuid4().hex[:8]}"
    # Make the shared filter say "maybe" for a name no station has (as a false positive would).
    raw = redis.Redis.from_url(container.settings.redis_url or "")
    for p in service.bloom_shape.positions(station_term_key(ghost)):
        raw.setbit("search:bloom", p, 1)
    with QueryLog(container) as log:
        for _ in range(3):
            with pytest.raises(NotFound):
                await service.search(q(ghost, net.stations[1]))
    assert log.count("FROM station") == 1
    assert service.stats["negative_hits"] == 2
    ttl = raw.pttl(f"search:none:station:{ghost}")
    assert 0 < ttl <= service.empty_ttl_seconds * (1 + service.ttl_spread) * 1000
    raw.close()


async def test_a_thousand_concurrent_misses_make_one_route_query(container: Container, net: Network) -> None:
    await RedisSearchCache(container.redis).flush()
    # Two services stand for two processes sharing Redis: single flight inside each, a lock between them.
    first, second = fresh_service(container), fresh_service(container)
    await asyncio.gather(first.directory(), second.directory())
    queries = [q(net.stations[1], net.stations[3]) for _ in range(500)]
    with QueryLog(container) as log:
        answers = await asyncio.gather(
            *(first.search(x) for x in queries), *(second.search(x) for x in queries)
        )
    assert log.count("daily_train_stop") == 1
    assert first.stats["route_queries"] + second.stats["route_queries"] == 1
    assert all(a.offers == answers[0].offers for a in answers)
    assert answers[0].offers[0].train_code == net.train


async def test_route_expiry_is_spread(container: Container, net: Network) -> None:
    await RedisSearchCache(container.redis).flush()
    service = fresh_service(container, route_ttl_seconds=300, ttl_spread=0.2)
    codes = net.codes[:4]
    for a in codes:
        for b in codes:
            if a != b:
                await service.search(q(a, b))
    raw = redis.Redis.from_url(container.settings.redis_url or "")
    ttls = [raw.pttl(k) for k in raw.scan_iter(match="search:legs:*")]
    raw.close()
    non_empty = [t for t in ttls if t > 20_000]  # pairs with trains; reverse pairs cache "none" briefly
    assert len(ttls) == 12 and len(non_empty) == 6
    assert all(240_000 - 1000 <= t <= 360_000 for t in non_empty)
    assert max(non_empty) - min(non_empty) > 5_000  # not one expiry instant for all of them


async def test_hot_answers_are_at_most_one_second_old(container: Container, net: Network) -> None:
    await ensure_day_loaded(container, net.train, DAY)  # another test may have flushed Redis
    clock = FakeClock()
    service = fresh_service(container, clock)
    journey = q(net.stations[0], net.stations[2])
    before = (await service.search(journey)).offers[0].seats["second"].remaining
    await container.allocator.allocate(
        net.train, DAY, AllocationRequest(0, 2, (PassengerSeatRequest("second"),)), order_id=uuid.uuid4().hex
    )
    assert (await service.search(journey)).offers[0].seats["second"].remaining == before  # served hot
    clock.advance(1.01)
    assert (await service.search(journey)).offers[0].seats["second"].remaining == before - 1


async def test_counts_equal_the_allocator_once_the_bound_passes(container: Container, net: Network) -> None:
    await ensure_day_loaded(container, net.train, DAY)  # another test may have flushed Redis
    clock = FakeClock()
    service = fresh_service(container, clock)
    journeys = [(0, 1), (1, 3), (0, 3), (2, 3)]
    await service.search(q(net.stations[0], net.stations[3]))

    async def book(i: int) -> None:
        a, b = journeys[i % len(journeys)]
        seat_class = "second" if i % 3 else "business"
        try:
            await container.allocator.allocate(
                net.train,
                DAY,
                AllocationRequest(a, b, (PassengerSeatRequest(seat_class),)),
                order_id=uuid.uuid4().hex,
            )
        except Exception as exc:  # sold out is a fine outcome of a burst
            assert getattr(exc, "code", "") == "SOLD_OUT"

    await asyncio.gather(*(book(i) for i in range(40)))
    clock.advance(1.01)
    for a in range(4):
        for b in range(a + 1, 4):
            answer = await service.search(q(net.stations[a], net.stations[b]))
            offer = next(o for o in answer.offers if o.train_code == net.train)
            expected = await container.allocator.remaining(net.train, DAY, a, b)
            assert {c: s.remaining for c, s in offer.seats.items()} == expected


async def test_seat_map_marks_sold_seats(container: Container, net: Network) -> None:
    await ensure_day_loaded(container, net.train, DAY)  # another test may have flushed Redis
    service = fresh_service(container)
    seats = await container.allocator.allocate(
        net.train,
        DAY,
        AllocationRequest(1, 2, (PassengerSeatRequest("business"),)),
        order_id=uuid.uuid4().hex,
    )
    sold = seats[0].seat_name
    overlapping = await service.seat_map(net.train, DAY, net.stations[0], net.stations[2], "business")
    disjoint = await service.seat_map(net.train, DAY, net.stations[2], net.stations[3], "business")

    def free(answer: Any) -> dict[str, bool]:
        return {cell.name: cell.free for _, rows in answer.carriages for _, cells in rows for cell in cells}

    assert free(overlapping)[sold] is False
    masks = (await container.allocator.masks(net.train, DAY))["business"]
    names = [f"01-{row:02d}{letter}" for row in (1, 2) for letter in "ACF"]
    assert free(disjoint) == {n: m & journey_mask(2, 3) == 0 for n, m in zip(names, masks, strict=True)}
    assert free(overlapping) == {n: m & journey_mask(0, 2) == 0 for n, m in zip(names, masks, strict=True)}
    with QueryLog(container) as log, pytest.raises(NotFound) as caught:
        await service.seat_map("G9", DAY + dt.timedelta(days=1), net.stations[0], net.stations[1], "business")
    assert caught.value.code == "TRAIN_NOT_FOUND" and log.count() == 0


# ---- Redis going away -----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class OwnRedis:
    """A redis-server of the test's own, so it can be killed and brought back."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port)
        for _ in range(200):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                import time

                time.sleep(0.02)
        client.close()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@pytest.fixture
def own_redis() -> Iterator[OwnRedis]:
    server = OwnRedis()
    server.start()
    yield server
    server.stop()


def test_outages_are_told_from_answers() -> None:
    # The breaker counts only an unreachable or loading Redis; an answer such as an error reply or
    # "not found" means Redis is up.
    assert is_redis_outage(redis.ConnectionError("refused"))
    assert is_redis_outage(redis.TimeoutError("slow"))
    assert is_redis_outage(redis.BusyLoadingError("loading"))
    assert is_redis_outage(redis.ResponseError("LOADING Redis is loading the dataset in memory"))
    assert is_redis_outage(TimeoutError())  # the service's own time limit
    assert is_redis_outage(ConnectionResetError())
    assert not is_redis_outage(redis.ResponseError("ERR unknown command"))
    assert not is_redis_outage(NotFound("no such day"))
    assert InProcessSearchCache().is_outage(TimeoutError())
    assert not InProcessSearchCache().is_outage(ValueError())


@pytest.mark.slow
async def test_search_survives_redis_going_away_and_recovers(pg_url: str, own_redis: OwnRedis) -> None:
    async with container_for(settings_for(pg_url, own_redis.url)) as container:
        clock = FakeClock()
        service = fresh_service(container, clock, redis_timeout=0.5)
        service.breaker.threshold = 2
        service.breaker.cooldown = 5.0  # longer than the steps below, so "open" stays open between them
        container.search = service
        net = await seed_network(container)
        app = create_app(container=container)
        async with LifespanManager(app) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
                params = {"from": net.stations[0], "to": net.stations[3], "date": DAY.isoformat()}
                healthy = await http.get("/api/v1/trains/search", params=params)
                assert healthy.status_code == 200 and "x-railbook-stale" not in healthy.headers

                own_redis.stop()
                for _ in range(3):
                    clock.advance(1.01)  # past the hot-answer bound: each request really reads
                    down = await http.get("/api/v1/trains/search", params=params)
                    assert down.status_code == 200, down.text
                    assert down.headers.get("x-railbook-stale") == "1"
                    assert down.json() == healthy.json()  # no tickets yet: the database agrees
                assert service.breaker.state == "open"
                skipped = service.stats["redis_skipped"]
                clock.advance(1.01)
                await http.get("/api/v1/trains/search", params=params)
                assert service.stats["redis_skipped"] > skipped  # open: Redis not even tried
                seat_map = await http.get(
                    f"/api/v1/trains/{net.train}/seat-map", params={**params, "seat_class": "second"}
                )
                assert seat_map.status_code == 200 and seat_map.headers.get("x-railbook-stale") == "1"

                own_redis.start()  # back, and empty: the allocator's days are reloaded from PostgreSQL
                clock.advance(service.breaker.cooldown + 1.01)
                # Half-open: one call of this request probes Redis (the others still skip it); the
                # probe's success closes the breaker, and the next answer is fresh again.
                probe = await http.get("/api/v1/trains/search", params=params)
                assert probe.status_code == 200
                assert service.breaker.state == "closed"
                clock.advance(1.01)
                back = await http.get("/api/v1/trains/search", params=params)
                assert back.status_code == 200 and "x-railbook-stale" not in back.headers
                assert back.json() == healthy.json()
                assert service.breaker.state == "closed"


async def test_count_snapshots_equal_the_allocator_for_every_pair(container: Container) -> None:
    net = await seed_network(container)  # a train of its own: seats left to sell
    for i, (a, b) in enumerate([(0, 2), (1, 3), (0, 1), (2, 3)]):
        await container.allocator.allocate(
            net.train,
            DAY,
            AllocationRequest(a, b, (PassengerSeatRequest("second" if i % 2 else "business"),)),
            order_id=uuid.uuid4().hex,
        )
    missing = "G0"
    tables = await container.allocator.count_tables([(net.train, DAY), (missing, DAY)])
    assert tables[1] is None
    table = tables[0]
    assert table is not None and table.n_stops == 4
    for x in range(4):
        for y in range(x + 1, 4):
            assert table.remaining(x, y) == await container.allocator.remaining(net.train, DAY, x, y)
    assert table.remaining(0, 2) == {"business": 4, "second": 19}  # 6 and 20 seats, less the overlaps


async def test_a_hot_answer_expires_with_the_snapshot_it_was_built_from(container: Container) -> None:
    net = await seed_network(container)  # a train of its own: seats left to sell
    clock = FakeClock()
    service = fresh_service(container, clock)
    await service.search(q(net.stations[0], net.stations[3]))  # reads the train-day's counts at t0
    reads = service.stats["count_reads"]
    clock.advance(0.6)
    other = q(net.stations[1], net.stations[2])
    before = (await service.search(other)).offers[0].seats["second"].remaining
    assert service.stats["count_reads"] == reads  # another pair on the same train: no new read
    await container.allocator.allocate(
        net.train, DAY, AllocationRequest(1, 2, (PassengerSeatRequest("second"),)), order_id=uuid.uuid4().hex
    )
    clock.advance(0.41)  # 1.01 s after the read, 0.41 s after the answer was built: too old all the same
    assert (await service.search(other)).offers[0].seats["second"].remaining == before - 1


async def test_an_unchanged_answer_is_reused_past_the_bound_and_a_changed_one_rebuilt(
    container: Container,
) -> None:
    net = await seed_network(container)  # a train of its own: seats left to sell
    clock = FakeClock()
    service = fresh_service(container, clock)
    journey = q(net.stations[0], net.stations[2])

    def encode(answer: Any) -> bytes:
        return repr(answer.offers).encode()

    first, _ = await service.search_encoded(journey, encode)
    reads = service.stats["count_reads"]
    clock.advance(1.01)
    again, _ = await service.search_encoded(journey, encode)
    assert service.stats["count_reads"] == reads + 1  # the counts were read again...
    assert service.stats["answers_reused"] == 1 and again is first  # ...found unchanged: same bytes
    await container.allocator.allocate(
        net.train, DAY, AllocationRequest(0, 2, (PassengerSeatRequest("second"),)), order_id=uuid.uuid4().hex
    )
    clock.advance(1.01)
    changed, _ = await service.search_encoded(journey, encode)
    assert service.stats["answers_reused"] == 1 and changed != first
    offer = next(o for o in (await service.search(journey)).offers if o.train_code == net.train)
    assert {c: s.remaining for c, s in offer.seats.items()} == await container.allocator.remaining(
        net.train, DAY, 0, 2
    )
