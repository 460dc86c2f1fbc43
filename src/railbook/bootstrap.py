"""Composition root: builds the concrete adapters once (app lifespan, worker, CLI) and passes them in.

Nothing here runs at import time.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from railbook.adapters.db.accept_reads import DbAcceptReads
from railbook.adapters.db.blocklist import SqlBlocklist
from railbook.adapters.db.cancellations import SqlCancellationStore
from railbook.adapters.db.changes import SqlChangeStore
from railbook.adapters.db.day_records import SqlDayRecords
from railbook.adapters.db.engine import make_engine, make_sessionmaker
from railbook.adapters.db.members import SqlMembers
from railbook.adapters.db.models import SystemValue
from railbook.adapters.db.order_reads import DbOrderReads
from railbook.adapters.db.orders import DbOrderStore
from railbook.adapters.db.outbox import OutboxStore
from railbook.adapters.db.payments import SqlPaymentStore
from railbook.adapters.db.refunds import SqlRefundStore
from railbook.adapters.db.routes import RouteRepository
from railbook.adapters.db.sale_days import SqlSaleDays
from railbook.adapters.db.seat_layout import SeatLayoutRepository
from railbook.adapters.db.timetable import SqlTimetable
from railbook.adapters.db.waitlist import SqlWaitlistStore
from railbook.adapters.payment.mock import MockProvider
from railbook.config import Settings
from railbook.services.booking.accept import ACCEPT_SLOTS
from railbook.services.booking.memos import MemberCache, SoldOutMemo
from railbook.services.booking.ports import (
    AcceptReads,
    OrderGuard,
    OrderIntake,
    OrderReads,
    OrderStore,
    OrderViewCache,
)
from railbook.services.booking.train_days import TrainDayCache
from railbook.services.booking.trip_ports import TripGuard
from railbook.services.members.antibot import CaptchaImages
from railbook.services.members.blocklist import Blocklist
from railbook.services.members.passwords import PasswordHasher
from railbook.services.members.ports import CaptchaStore, LoginThrottle
from railbook.services.ports import Allocator, SearchChanges
from railbook.services.search.service import SearchService

if TYPE_CHECKING:
    from railbook.adapters.embedded.queue import OrderQueue
    from railbook.adapters.redis.autopipe import AutoPipeline
    from railbook.adapters.redis.events import RedisEventStream

TrainDayKey = tuple[str, dt.date]


@dataclass(eq=False)
class Container:
    """Everything a request, a worker or a command needs, built once per process by
    ``build_container``: one named, typed field per part."""

    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    redis: Any | None  # redis.asyncio.Redis in distributed mode, None when embedded
    allocator: Allocator
    guard: OrderGuard  # sale tokens, duplicate markers, idempotency, rate limits, pending records
    trips: TripGuard  # the trips each passenger holds (one person, one seat at a time)
    intake: OrderIntake  # an order's admission and allocation (one round trip on Redis)
    accept_reads: AcceptReads  # the accept path's lean reads of the system of record
    orders: OrderStore  # the committer's and the markers' orders and tickets
    order_reads: OrderReads  # committed orders read back for their member
    order_views: OrderViewCache  # the read model's cache: order views, member lists and accounts
    search: SearchService
    search_changes: SearchChanges  # commits, cancellations, refunds and changes tell search
    search_routes: RouteRepository  # stations, train-days and route legs as search reads them
    search_seats: SeatLayoutRepository  # seat layouts and active tickets as search reads them
    jwt_secret: str
    password_hasher: PasswordHasher
    payment_provider: MockProvider
    outbox: OutboxStore  # the outbox relay's batches, processed-event records, their pruning
    payments: SqlPaymentStore
    cancellations: SqlCancellationStore
    refunds: SqlRefundStore
    ticket_changes: SqlChangeStore
    waitlists: SqlWaitlistStore
    timetable: SqlTimetable  # the catalog: stations and trains as published
    sale_days: SqlSaleDays  # the timetable as sale days freeze it, and the opening of dates
    day_records: SqlDayRecords  # open train-days in the system of record (layouts, releases, tickets)
    members: SqlMembers  # member accounts and their passengers
    captchas: CaptchaStore  # captcha answers, each good for one check (Redis, or memory when embedded)
    login_throttle: LoginThrottle  # failed logins per mobile and per client address
    blocklist: Blocklist  # blocked mobiles and addresses: the system of record's list, copied in process
    captcha_images: CaptchaImages = field(default_factory=CaptchaImages)
    autopipe: AutoPipeline | None = None  # distributed: the accept path's Redis calls share batches
    event_stream: RedisEventStream | None = None  # distributed: the events stream (embedded: event_queue)
    queue: OrderQueue | None = None  # embedded: the in-process order queue
    train_days: TrainDayCache = field(default_factory=TrainDayCache)
    member_cache: MemberCache = field(default_factory=MemberCache)
    sold_out_memo: SoldOutMemo = field(default_factory=SoldOutMemo)
    accept_slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(ACCEPT_SLOTS))
    # Train-days whose duplicate markers are being restored, and train-day loads in flight (one per day).
    marker_restores: set[TrainDayKey] = field(default_factory=set)
    day_loads: dict[TrainDayKey, asyncio.Task[bool]] = field(default_factory=dict)
    # Verified bearer tokens until their ``exp`` (the API's principal), bounded by the API.
    verified_tokens: dict[str, tuple[float, Any]] = field(default_factory=dict)
    event_queue: asyncio.Queue[dict[str, str]] = field(default_factory=asyncio.Queue)  # embedded events
    events_prune_due: float = 0.0  # loop time of the next pruning of old events

    async def close(self) -> None:
        await self.blocklist.close()
        await self.search.aclose()
        await self.accept_reads.aclose()
        if self.redis is not None:
            await self.redis.aclose()
        await self.engine.dispose()


async def _jwt_secret(settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]) -> str:
    """The configured secret, or one generated once and kept with the data (shared by all processes)."""
    if settings.jwt_secret:
        return settings.jwt_secret
    async with sessionmaker() as session, session.begin():
        row = await session.get(SystemValue, "jwt_secret")
        if row is None:
            session.add(SystemValue(key="jwt_secret", value=secrets.token_urlsafe(48)))
    async with sessionmaker() as session:
        value = (
            await session.execute(select(SystemValue.value).where(SystemValue.key == "jwt_secret"))
        ).scalar_one()
        return value


def make_redis(url: str, *, cluster: bool = False) -> Any:
    """An async Redis client with bounded timeouts, so an outage fails fast instead of hanging; on a
    Redis Cluster (``cluster``) a ``RedisCluster`` that discovers the other nodes from ``url``."""
    options: dict[str, Any] = {
        "protocol": 2,
        "socket_timeout": 2.0,
        "socket_connect_timeout": 1.0,
        "health_check_interval": 5,
        "max_connections": 200,  # per node on a cluster
        "decode_responses": False,
        # No CLIENT SETINFO in the connect handshake: a Redis before 7.2 refuses it, and a reply of
        # that refusal read out of step after a reconnect would reach a command as its answer.
        "driver_info": None,
    }
    if cluster:
        from redis.asyncio.cluster import RedisCluster

        return RedisCluster.from_url(url, **options)
    import redis.asyncio as aioredis

    return aioredis.Redis.from_url(url, **options)


async def build_container(settings: Settings) -> Container:
    """Wire the concrete adapters chosen by the settings (embedded or distributed)."""
    engine = make_engine(settings.database_url, pool_size=settings.db_pool_size)
    sessionmaker = make_sessionmaker(engine)
    search_routes = RouteRepository(sessionmaker)
    search_seats = SeatLayoutRepository(sessionmaker)
    day_records = SqlDayRecords(sessionmaker)
    redis_client = None
    allocator: Allocator
    guard: OrderGuard
    intake: OrderIntake
    order_views: OrderViewCache
    captchas: CaptchaStore
    login_throttle: LoginThrottle
    autopipe = None
    event_stream = None
    queue = None
    if settings.redis_url:
        from railbook.adapters.redis.allocator import RedisAllocator
        from railbook.adapters.redis.antibot import RedisCaptchaStore, RedisLoginThrottle
        from railbook.adapters.redis.cache import RedisSearchCache
        from railbook.adapters.redis.cluster import make_autopipe
        from railbook.adapters.redis.events import RedisEventStream
        from railbook.adapters.redis.intake import RedisOrderIntake
        from railbook.adapters.redis.order_views import RedisOrderViews
        from railbook.adapters.redis.protection import RedisOrderGuard
        from railbook.adapters.redis.search_feed import RedisSearchFeed
        from railbook.adapters.redis.trips import RedisTrips

        redis_client = make_redis(settings.redis_url, cluster=settings.redis_cluster)
        # One per process: the accept path's calls share batches (on a cluster, batches per node).
        autopipe = make_autopipe(redis_client, cluster=settings.redis_cluster)
        redis_allocator = RedisAllocator(redis_client, autopipe=autopipe)
        event_stream = RedisEventStream(redis_client, autopipe)
        redis_guard = RedisOrderGuard(
            redis_client,
            member_orders_per_minute=settings.member_orders_per_minute,
            ip_requests_per_second=settings.ip_requests_per_second,
            autopipe=autopipe,
        )
        allocator, guard = redis_allocator, redis_guard
        redis_trips = RedisTrips(redis_client, autopipe)
        trips: TripGuard = redis_trips
        intake = RedisOrderIntake(redis_guard, redis_allocator, redis_trips)
        order_views = RedisOrderViews(redis_client, autopipe)
        captchas = RedisCaptchaStore(redis_client, autopipe)
        login_throttle = RedisLoginThrottle(autopipe)
        search = SearchService(
            settings,
            day_records,
            allocator,
            RedisSearchCache(redis_client),
            search_routes,
            search_seats,
            feed=RedisSearchFeed(redis_client),
        )
    else:
        from railbook.adapters.embedded.allocator import InProcessAllocator
        from railbook.adapters.embedded.antibot import MemoryCaptchaStore, MemoryLoginThrottle
        from railbook.adapters.embedded.cache import InProcessSearchCache
        from railbook.adapters.embedded.intake import EmbeddedOrderIntake
        from railbook.adapters.embedded.order_views import MemoryOrderViews
        from railbook.adapters.embedded.queue import MemoryOrderGuard, OrderQueue
        from railbook.adapters.embedded.trips import MemoryTrips

        queue = OrderQueue()
        local_allocator = InProcessAllocator(on_message=queue.put)
        memory_guard = MemoryOrderGuard(
            queue,
            member_orders_per_minute=settings.member_orders_per_minute,
            ip_requests_per_second=settings.ip_requests_per_second,
        )
        allocator, guard = local_allocator, memory_guard
        trips = MemoryTrips()
        intake = EmbeddedOrderIntake(memory_guard, local_allocator)
        order_views = MemoryOrderViews()
        captchas = MemoryCaptchaStore()
        login_throttle = MemoryLoginThrottle()
        search = SearchService(
            settings, day_records, allocator, InProcessSearchCache(), search_routes, search_seats
        )
    try:
        secret = await _jwt_secret(settings, sessionmaker)
    except Exception:
        # A race between two processes creating the secret: the loser reads the winner's.
        secret = await _jwt_secret(settings, sessionmaker)
    postgres = engine.dialect.name == "postgresql"
    # Reads of committed orders: no transaction around them on PostgreSQL (each statement has its own
    # snapshot either way under READ COMMITTED), which saves the BEGIN and ROLLBACK round trips of
    # every read. SQLite keeps its transactions (its connections' BEGIN is ours, see make_engine).
    reads = engine.execution_options(isolation_level="AUTOCOMMIT") if postgres else engine
    return Container(
        settings=settings,
        engine=engine,
        sessionmaker=sessionmaker,
        redis=redis_client,
        allocator=allocator,
        guard=guard,
        trips=trips,
        intake=intake,
        accept_reads=DbAcceptReads(
            settings.database_url,
            sessionmaker,
            sqlite=not postgres,
            traveller_secret=secret,
            pool_size=2 * settings.db_pool_size,
        ),
        orders=DbOrderStore(sessionmaker, engine),
        order_reads=DbOrderReads(reads),
        order_views=order_views,
        search=search,
        search_changes=search,
        search_routes=search_routes,
        search_seats=search_seats,
        jwt_secret=secret,
        password_hasher=PasswordHasher(settings),
        payment_provider=MockProvider(secret),
        outbox=OutboxStore(sessionmaker, postgres=postgres),
        payments=SqlPaymentStore(engine),
        cancellations=SqlCancellationStore(sessionmaker),
        refunds=SqlRefundStore(sessionmaker),
        ticket_changes=SqlChangeStore(sessionmaker),
        waitlists=SqlWaitlistStore(sessionmaker),
        timetable=SqlTimetable(sessionmaker),
        sale_days=SqlSaleDays(sessionmaker),
        day_records=day_records,
        members=SqlMembers(sessionmaker, reads, traveller_secret=secret),
        captchas=captchas,
        login_throttle=login_throttle,
        blocklist=Blocklist(SqlBlocklist(sessionmaker)),
        autopipe=autopipe,
        event_stream=event_stream,
        queue=queue,
    )


GC_THRESHOLDS = (20_000, 20, 20)


def freeze_startup_heap() -> None:
    """Move everything built at start-up (the app, the container, imported modules) out of the
    garbage collector's reach. A full collection otherwise walks that whole long-lived heap again and
    again under load: an order costs about a quarter more CPU with it (measured in process). For the
    server processes only, once they are ready; objects made later are collected, less often."""
    import gc

    gc.collect()
    gc.freeze()
    # Young collections every 20,000 net allocations instead of 700, and older generations less often:
    # a request makes and drops a few hundred objects, almost none of them in cycles, so the default
    # collects several times per request for nothing. Measured with ``railbook bench orders``: the
    # API process's CPU per order answer 114 µs against 134–164 µs with the defaults (paired runs).
    gc.set_threshold(*GC_THRESHOLDS)
