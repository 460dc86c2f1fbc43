"""Fault harness: a real ``railbook serve`` (PostgreSQL + Redis) under a crowd of HTTP clients booking one
hot train-day, while the serve process is killed, Redis is killed (with AOF, or wiped) and PostgreSQL is
cut off behind a TCP proxy. Afterwards an audit: no seat segment held twice, nothing sold beyond
capacity, the allocator agrees with the system of record, every 202 order ends final, no 500 was ever
answered and every 503 carried Retry-After (the crowd and the audit: ``tests/crowd.py``).

Each test starts its own ``redis-server`` (AOF on, ``appendfsync always``) and its own PostgreSQL
database; the shared servers are never stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import random
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import redis.asyncio as aioredis
from sqlalchemy import make_url

from railbook.adapters.redis.allocator import order_stream_key
from railbook.adapters.redis.stream import GROUP
from tests import crowd
from tests.conftest import PG_ADMIN_DSN, fresh_pg_database
from tests.crowd import (
    Shopper,
    Tally,
    audit_day,
    call,
    crowd_client,
    hot_day,
    run_railbook,
    server_env,
    settle_orders,
    shop,
)
from tests.live_server import free_port, log_tail
from tests.support import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

N_STOPS = 5
ROWS = 12  # one second-class carriage: 60 seats
MEMBERS = 60


# --------------------------------------------------------------------------------------------
# Processes and the proxy.


class RedisServer:
    """A private ``redis-server`` with AOF (``appendfsync always``); killed with SIGKILL, restarted on
    the same port, with its data directory or a fresh one (a total loss of Redis data)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.generation = 0
        self.dir = workdir / "redis-0"
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self, *, wiped: bool = False) -> None:
        if wiped:
            self.generation += 1
            self.dir = self.workdir / f"redis-{self.generation}"
        self.dir.mkdir(exist_ok=True)
        command = [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
            "--dir",
            str(self.dir),
            "--protected-mode",
            "no",
        ]
        with (self.workdir / "redis.log").open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(*command, stdout=log, stderr=log)
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(self.url, socket_connect_timeout=0.5, socket_timeout=1.0)
        try:
            for _ in range(100):
                with contextlib.suppress(Exception):
                    if await client.ping():
                        return
                await asyncio.sleep(0.1)
            raise AssertionError(f"redis-server did not start:\n{log_tail(self.workdir / 'redis.log')}")
        finally:
            await client.aclose()

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            await self.kill()


class TcpProxy:
    """A TCP relay between the serve process and PostgreSQL that can be cut (every connection reset,
    new ones refused) and restored on the same port."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.server: asyncio.Server | None = None
        self.links: set[asyncio.StreamWriter] = set()
        self.tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", self.port, reuse_address=True)

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in list(self.links):
            writer.transport.abort()
        self.links.clear()
        self.server = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self.links.update((writer, up_writer))
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        except (OSError, RuntimeError):
            pass
        finally:
            self.links.discard(sink)
            sink.transport.abort()

    async def close(self) -> None:
        if self.server is not None:
            await self.cut()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


class ServeProcess:
    """``railbook serve`` on a fixed port, so it can be killed and started again behind the same URL."""

    def __init__(self, workdir: Path, settings: dict[str, str]) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RAILBOOK_")}
        self.env.update(settings)
        self.log = workdir / "serve.log"
        self.proc: asyncio.subprocess.Process | None = None

    async def spawn(self, *args: str) -> asyncio.subprocess.Process:
        """``railbook ARGS`` with this server's settings, its output appended to the log."""
        railbook = Path(sys.executable).with_name("railbook")
        with self.log.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                str(railbook), *args, cwd=self.workdir, env=self.env, stdout=log, stderr=log
            )
        return self.proc

    async def start(self, role: str = "serve") -> None:
        """Start ``railbook serve`` (or ``railbook api``: HTTP only, no committer) and wait until healthy."""
        await self.spawn(role, "--host", "127.0.0.1", "--port", str(self.port))
        assert self.proc is not None
        deadline = time.monotonic() + 90
        async with httpx.AsyncClient(timeout=1.0) as client:
            while True:
                if self.proc.returncode is not None:
                    raise AssertionError(f"serve exited with {self.proc.returncode}:\n{log_tail(self.log)}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{self.url}/healthz")).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise AssertionError(f"serve not healthy:\n{log_tail(self.log)}")
                await asyncio.sleep(0.1)

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()

    async def stop(self) -> None:
        """SIGTERM and wait without blocking the event loop (the database proxy lives in it)."""
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.terminate()
        try:
            await asyncio.wait_for(self.proc.wait(), timeout=20)
        except TimeoutError:
            await self.kill()
            raise AssertionError(f"serve did not stop on SIGTERM:\n{log_tail(self.log)}") from None

    async def railbook(self, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
        """Run a ``railbook`` command with this server's settings (without blocking the event loop)."""
        return await run_railbook(env or self.env, *args, cwd=self.workdir)


# --------------------------------------------------------------------------------------------
# The stage.


@dataclass
class Stage:
    """One fault run: the stores, the server, the hot train-day and the crowd."""

    serve: ServeProcess
    redis: RedisServer
    pg_url: str  # the real database (the audit reads it directly, never through the proxy)
    day: dict[str, Any]
    shoppers: list[Shopper]
    client: httpx.AsyncClient
    tally: Tally = field(default_factory=Tally)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start_crowd(self) -> None:
        rng = random.Random(11)
        for s in self.shoppers:
            r = random.Random(rng.random())
            self.tasks.append(
                asyncio.create_task(shop(self.client, s, self.day, self.stop, self.tally, r), name="shopper")
            )

    async def stop_crowd(self) -> None:
        self.stop.set()
        await asyncio.gather(*self.tasks)


@contextlib.asynccontextmanager
async def _pg_database(admin_dsn: str = PG_ADMIN_DSN) -> AsyncIterator[str]:
    """A fresh migrated database; made in a thread (the migration runs its own event loop)."""
    manager = fresh_pg_database(admin_dsn)
    url = await asyncio.to_thread(manager.__enter__)
    try:
        yield url
    finally:
        await asyncio.to_thread(manager.__exit__, None, None, None)


@contextlib.asynccontextmanager
async def stage(
    tmp_path: Path, *, proxy: bool = False, pg_admin_dsn: str = PG_ADMIN_DSN
) -> AsyncIterator[tuple[Stage, TcpProxy | None]]:
    """Stores, a serve process (behind a PostgreSQL proxy when asked), a hot train-day and shoppers. The
    database is made on the shared PostgreSQL, or on the server of ``pg_admin_dsn``."""
    redis = RedisServer(tmp_path)
    await redis.start()
    tcp: TcpProxy | None = None
    serve: ServeProcess | None = None
    try:
        async with _pg_database(pg_admin_dsn) as pg_url:
            db_url = pg_url
            if proxy:
                real = make_url(pg_url)
                tcp = TcpProxy(real.port or 5432)
                await tcp.start()
                db_url = real.set(port=tcp.port).render_as_string(hide_password=False)
            serve = ServeProcess(tmp_path, server_env(db_url, redis.url))
            await serve.start()
            async with crowd_client(serve.url, MEMBERS + 10) as client:
                day, shoppers = await hot_day(client, pg_url, rows=ROWS, stops=N_STOPS, shoppers=MEMBERS)
                s = Stage(serve, redis, pg_url, day, shoppers, client)
                try:
                    yield s, tcp
                finally:
                    s.stop.set()
                    await asyncio.gather(*s.tasks, return_exceptions=True)
            await serve.stop()  # before its database is dropped
    finally:
        if serve is not None and serve.proc is not None and serve.proc.returncode is None:
            await serve.kill()
        if tcp is not None:
            await tcp.close()
        await redis.stop()


# --------------------------------------------------------------------------------------------
# The audit.


async def settle(s: Stage, *, within_s: float, lost_ok: bool) -> Counter[str]:
    """Every accepted order reads back final within ``within_s`` (``tests.crowd.settle_orders``)."""
    return await settle_orders(s.client, s.tally, within_s=within_s, lost_ok=lost_ok, logs=[s.serve.log])


async def audit(s: Stage) -> dict[str, Any]:
    """The system of record holds no segment twice and no more than capacity; Redis agrees with it."""
    return await audit_day(s.pg_url, s.day, s.serve.env)


def assert_clean(s: Stage, *, refused_ok: bool = False) -> None:
    crowd.assert_clean(s.tally, [s.serve.log], refused_ok=refused_ok)


def report(name: str, s: Stage, finals: Counter[str], figures: dict[str, Any]) -> None:
    crowd.report(name, s.tally, finals, figures)


async def crowd_phase(s: Stage, seconds: float) -> int:
    """Let the crowd run; returns how many orders were accepted in that time."""
    before = len(s.tally.accepted)
    await asyncio.sleep(seconds)
    return len(s.tally.accepted) - before


async def database_outage(
    s: Stage, down: Callable[[], Awaitable[None]], up: Callable[[], Awaitable[None]], *, down_s: float = 3.0
) -> None:
    """Take PostgreSQL away under the crowd (``down``) for ``down_s``: not ready, 503 meanwhile; bring
    it back (``up``): ready again, and orders are accepted again."""
    await down()
    before = s.tally.statuses[503]
    await asyncio.sleep(down_s)
    ready = await call(s.client, s.tally, "GET", "/readyz")
    assert ready is not None and ready.status_code == 503, "ready while the database is down"
    assert s.tally.statuses[503] > before, "no 503 while the database was down"
    await up()
    # Requests that came in during the outage may still be queued for a turn (each for at most
    # QUEUE_WAIT_SECONDS, 10) ahead of the first orders after it: give recovery that long and more.
    assert await crowd_phase(s, 12.0) > 0, "nothing accepted after the database came back"
    ready = await call(s.client, s.tally, "GET", "/readyz")
    assert ready is not None and ready.status_code == 200, "not ready again after the database came back"


# --------------------------------------------------------------------------------------------
# Scenarios.


async def test_serve_killed_mid_crowd_loses_nothing(tmp_path: Path) -> None:
    """kill -9 of the serve process, then a restart on the same stores: every 202 order ends final
    (the stream survives in Redis; the new committer claims what the dead one had read)."""
    async with stage(tmp_path) as (s, _):
        s.start_crowd()
        assert await crowd_phase(s, 3.0) > 0
        await s.serve.kill()
        await asyncio.sleep(1.0)
        await s.serve.start()
        assert await crowd_phase(s, 3.0) > 0, "nothing accepted after the restart"
        await s.stop_crowd()
        finals = await settle(s, within_s=45, lost_ok=False)
        figures = await audit(s)
        report("serve killed", s, finals, figures)
        assert_clean(s, refused_ok=True)


async def test_redis_killed_with_aof_loses_nothing(tmp_path: Path) -> None:
    """kill -9 of Redis (AOF, fsync always) and a restart on the same port and data: 503 +
    Retry-After while it is down, nothing acknowledged is lost, the script cache is reloaded."""
    async with stage(tmp_path) as (s, _):
        s.start_crowd()
        assert await crowd_phase(s, 3.0) > 0
        await s.redis.kill()
        before = s.tally.statuses[503]
        await asyncio.sleep(3.0)
        assert s.tally.statuses[503] > before, "no 503 while Redis was down"
        await s.redis.start()
        assert await crowd_phase(s, 4.0) > 0, "nothing accepted after Redis came back"
        await s.stop_crowd()
        finals = await settle(s, within_s=45, lost_ok=False)
        figures = await audit(s)
        report("redis killed (AOF)", s, finals, figures)
        assert_clean(s)


async def test_redis_wiped_rebuilds_the_day_before_selling(tmp_path: Path) -> None:
    """Redis comes back empty: the day is rebuilt from PostgreSQL before it sells again, orders
    accepted but never committed read back FAILURE / LOST_IN_FAILOVER, nothing is oversold."""
    async with stage(tmp_path) as (s, _):
        s.start_crowd()
        assert await crowd_phase(s, 3.0) > 0
        await s.redis.kill()
        await asyncio.sleep(1.0)
        await s.redis.start(wiped=True)
        assert await crowd_phase(s, 5.0) > 0, "nothing accepted after Redis came back empty"
        await s.stop_crowd()
        finals = await settle(s, within_s=45, lost_ok=True)
        figures = await audit(s)
        report("redis wiped", s, finals, figures)
        assert_clean(s)


async def test_database_cut_off_mid_crowd(tmp_path: Path) -> None:
    """PostgreSQL unreachable (every connection reset, new ones refused) and back: 503 + Retry-After
    meanwhile, the committer retries and commits everything after recovery."""
    async with stage(tmp_path, proxy=True) as (s, tcp):
        assert tcp is not None
        s.start_crowd()
        assert await crowd_phase(s, 3.0) > 0
        await database_outage(s, tcp.cut, tcp.start)
        await s.stop_crowd()
        started = time.monotonic()
        finals = await settle(s, within_s=45, lost_ok=False)
        settled = time.monotonic() - started
        figures = await audit(s)
        figures["settle_s"] = round(settled, 1)
        report("database cut", s, finals, figures)
        assert_clean(s)


async def test_orders_lost_with_redis_data_read_back_lost_in_failover(tmp_path: Path) -> None:
    """Orders accepted (202) but never committed, then Redis data is lost: they read back FAILURE /
    LOST_IN_FAILOVER, and the day is rebuilt from PostgreSQL and sells again without overselling."""
    async with stage(tmp_path) as (s, _):
        await s.serve.kill()
        await s.serve.start("api")  # HTTP only: accepted orders stay in the stream, uncommitted
        names = [n for n, _ in s.day["stations"]]
        lost = []
        for shopper in s.shoppers[:10]:
            body = {
                "date": s.day["date"],
                "train_code": s.day["train_code"],
                "from": names[0],
                "to": names[-1],
                "passengers": [{"passenger_id": shopper.passengers[0], "seat_class": "second"}],
            }
            r = await call(s.client, s.tally, "POST", "/api/v1/orders", json=body, headers=shopper.headers)
            assert r is not None and r.status_code == 202, r
            lost.append(r.json()["order_id"])
            s.tally.accepted[r.json()["order_id"]] = shopper.headers
        await s.redis.kill()
        await s.redis.start(wiped=True)
        await s.serve.stop()
        await s.serve.start()
        s.start_crowd()
        assert await crowd_phase(s, 3.0) > 0, "nothing accepted after Redis came back empty"
        await s.stop_crowd()
        finals = await settle(s, within_s=45, lost_ok=True)
        for order_id in lost:
            r = await call(
                s.client, s.tally, "GET", f"/api/v1/orders/{order_id}", headers=s.tally.accepted[order_id]
            )
            assert r is not None and r.status_code == 200
            assert r.json()["status"] == "FAILURE" and r.json()["error"]["code"] == "LOST_IN_FAILOVER", r.text
        figures = await audit(s)
        report("orders lost with Redis data", s, finals, figures)
        assert_clean(s)


async def test_batch_committed_across_a_redis_wipe_is_held_again(tmp_path: Path) -> None:
    """A batch the committer read before Redis lost its data commits after the day was rebuilt from a
    snapshot without it: the committer sees the load epoch moved and marks the seats held again, so the
    allocator agrees with PostgreSQL and the crowd that follows buys none of those seats twice."""
    async with stage(tmp_path) as (s, _):
        names = [n for n, _ in s.day["stations"]]
        lock = await psycopg.AsyncConnection.connect(
            s.pg_url.replace("postgresql+asyncpg://", "postgresql://")
        )
        try:
            # The committer's last insert of a batch is the outbox's: it waits there, mid-transaction.
            await lock.execute("LOCK TABLE outbox IN ACCESS EXCLUSIVE MODE")
            for shopper in s.shoppers[:6]:
                body = {
                    "date": s.day["date"],
                    "train_code": s.day["train_code"],
                    "from": names[0],
                    "to": names[-1],
                    "passengers": [{"passenger_id": shopper.passengers[0], "seat_class": "second"}],
                }
                r = await call(
                    s.client, s.tally, "POST", "/api/v1/orders", json=body, headers=shopper.headers
                )
                assert r is not None and r.status_code == 202, r
                s.tally.accepted[r.json()["order_id"]] = shopper.headers

            # A backend that has written tickets and waits for the outbox: the committer, mid-batch.
            async def committer_blocked() -> bool:
                cur = await lock.execute(
                    "SELECT count(*) FROM pg_locks w JOIN pg_locks t ON t.pid = w.pid"
                    " WHERE w.relation = 'outbox'::regclass AND NOT w.granted"
                    " AND t.relation = 'ticket'::regclass AND t.granted"
                )
                row = await cur.fetchone()
                return bool(row and row[0])

            # ...with all six orders in that batch: read from the stream, not yet acknowledged (one still
            # in the stream would be lost with Redis, correctly, as LOST_IN_FAILOVER).
            stream = order_stream_key(s.day["train_code"], dt.date.fromisoformat(s.day["date"]))
            watch = aioredis.Redis.from_url(s.redis.url)

            async def all_six_read() -> bool:
                try:
                    pending = int((await watch.xpending(stream, GROUP))["pending"])
                except aioredis.ResponseError:  # NOGROUP: the committer has not read the stream yet
                    return False
                return pending == 6 and await committer_blocked()

            try:
                await wait_until(
                    all_six_read, timeout=15, what="the six orders in the committer's blocked batch"
                )
            except AssertionError as exc:
                raise AssertionError(f"{exc}:\n{log_tail(s.serve.log)}") from None
            finally:
                await watch.aclose()
            await s.redis.kill()
            await s.redis.start(wiped=True)
            env = dict(s.serve.env, RAILBOOK_DATABASE_URL=s.pg_url)
            rc, out = await s.serve.railbook(
                "inventory", "rebuild", "--date", s.day["date"], "--train", s.day["train_code"], env=env
            )
            assert rc == 0, out
        finally:
            await lock.rollback()
            await lock.close()
        finals = await settle(s, within_s=45, lost_ok=False)
        assert finals["SUCCESS"] == 6, finals  # committed, not lost: the database had them first
        # Repaired by the committer itself, right after its commit (not by a later reconciliation round).
        rc, out = await s.serve.railbook(
            "inventory", "check", "--date", s.day["date"], "--train", s.day["train_code"], env=env
        )
        assert rc == 0, f"allocator and system of record disagree after the commit:\n{out}"
        s.start_crowd()
        assert await crowd_phase(s, 3.0) > 0, "nothing accepted after the rebuild"
        await s.stop_crowd()
        # No SEAT_CONFLICT: nobody was sold a seat the database already held.
        finals = await settle(s, within_s=45, lost_ok=False)
        figures = await audit(s)
        report("batch committed across a wipe", s, finals, figures)
        assert_clean(s)
        assert "order_commit_repair_failed" not in s.serve.log.read_text(errors="replace")
