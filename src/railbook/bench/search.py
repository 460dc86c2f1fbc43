"""``railbook bench search``: search throughput beside a hello-world baseline, and cold-start time.

Unless ``--url`` is given it starts its own site: a scratch PostgreSQL database, a redis-server of its
own on a free port, and ``railbook serve`` (uvicorn, sample network loaded, sale window opened) as a
subprocess. In one run it measures, with the same client and concurrency:
- hello-world (``GET /healthz``) requests/s and latency percentiles;
- warm-cache search requests/s and p99 over random station pairs of the sample network (pairs
  along a sample train, so most answers list trains, plus random pairs);
- cold start: the search caches in Redis are flushed (and the 1 s hot bound left to pass), then
  throughput is sampled every 100 ms until it reaches 90 % of the warm figure.
The client is a small keep-alive HTTP/1.1 client on asyncio streams, so the load generator is not
what is being measured.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

from rich.console import Console
from rich.table import Table

console = Console()
PG_ADMIN_DSN = os.environ.get("RAILBOOK_BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class KeepAliveClient:
    """One persistent HTTP/1.1 connection: GET, read the status line, headers and Content-Length body."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str) -> int:
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode())
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            await self.close()
            raise
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        if length:
            await self.reader.readexactly(length)
        return status

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except Exception:  # the peer may be gone already
                pass
        self.reader = self.writer = None


@dataclass
class Phase:
    name: str
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def _load(
    host: str,
    port: int,
    paths: Callable[[], str],
    seconds: float,
    concurrency: int,
    name: str,
    window: Callable[[float], None] | None = None,
) -> Phase:
    """``concurrency`` connections, each sending the next request as soon as the last is answered."""
    phase = Phase(name)
    started = time.perf_counter()
    deadline = started + seconds

    async def one() -> None:
        client = KeepAliveClient(host, port)
        try:
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                try:
                    status = await client.get(paths())
                except (OSError, asyncio.IncompleteReadError):
                    phase.errors += 1
                    await asyncio.sleep(0.01)
                    continue
                t1 = time.perf_counter()
                phase.latencies.append(t1 - t0)
                phase.statuses[status] = phase.statuses.get(status, 0) + 1
                if window is not None:
                    window(t1)
        finally:
            await client.close()

    await asyncio.gather(*(one() for _ in range(concurrency)))
    phase.seconds = time.perf_counter() - started
    return phase


async def _sample_queries(date: dt.date, seed: int = 11) -> list[str]:
    """Search paths: pairs of stops along sample trains (answers with trains) and random pairs."""
    from railbook.services.sample import sample_network

    data = await sample_network()
    rng = random.Random(seed)
    stations = [s["name"] for s in data["stations"]]
    along: list[tuple[str, str]] = []
    for train in data["trains"]:
        stops = [s["station"] for s in train["stops"]]
        along.extend((stops[i], stops[j]) for i in range(len(stops)) for j in range(i + 1, len(stops)))
    pairs = rng.sample(along, min(len(along), 400))
    pairs += [tuple(rng.sample(stations, 2)) for _ in range(100)]
    day = date.isoformat()
    return [f"/api/v1/trains/search?from={quote(a)}&to={quote(b)}&date={day}" for a, b in pairs]


@dataclass
class Site:
    """A server this run started (and must stop), or the one given with ``--url``."""

    url: str
    redis_url: str | None
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    database: str | None = None
    log: Any = None  # the server's stderr, shown if it fails to start

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        if self.log is not None:
            self.log.close()
        if self.database is not None:
            import psycopg

            with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')


def _start_site() -> Site:
    import psycopg

    database = f"railbook_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    redis_port, http_port = _free_port(), _free_port()
    site = Site(
        f"http://127.0.0.1:{http_port}",
        f"redis://127.0.0.1:{redis_port}/0",
        database=database,
        log=tempfile.TemporaryFile(),
    )
    redis_server = shutil.which("redis-server") or "/usr/bin/redis-server"
    site.procs.append(
        subprocess.Popen(
            [redis_server, "--port", str(redis_port), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    )
    env = {
        **os.environ,
        "RAILBOOK_DATABASE_URL": f"{base}/{database}",
        "RAILBOOK_REDIS_URL": site.redis_url or "",
        "RAILBOOK_RATE_LIMITS": "off",
        "RAILBOOK_LOAD_SAMPLE_DATA": "true",
        "RAILBOOK_ADMIN_MOBILE": "13800000000",
        "RAILBOOK_ADMIN_PASSWORD": uuid.uuid4().hex,
        "RAILBOOK_LOG_LEVEL": "warning",
    }
    site.procs.append(
        subprocess.Popen(
            [sys.executable, "-m", "railbook.cli", "serve", "--port", str(http_port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=site.log,
        )
    )
    return site


async def _wait_ready(host: str, port: int, within: float = 180.0) -> None:
    deadline = time.perf_counter() + within
    client = KeepAliveClient(host, port)
    while time.perf_counter() < deadline:
        try:
            if await client.get("/readyz") == 200:
                await client.close()
                return
        except (OSError, asyncio.IncompleteReadError, ValueError):
            await client.close()
        await asyncio.sleep(0.25)
    raise RuntimeError("the server did not become ready")


async def _flush_search_caches(redis_url: str) -> int:
    import redis.asyncio as aioredis

    from railbook.adapters.redis.cache import RedisSearchCache

    client = aioredis.Redis.from_url(redis_url)
    try:
        return await RedisSearchCache(client).flush()
    finally:
        await client.aclose()


async def _cold_start(
    host: str,
    port: int,
    paths: Callable[[], str],
    concurrency: int,
    target_rps: float,
    redis_url: str,
    limit: float = 30.0,
) -> tuple[float | None, float, int]:
    """Flush the search caches; seconds until a 100 ms window reaches 90 % of the warm throughput."""
    flushed = await _flush_search_caches(redis_url)
    await asyncio.sleep(1.1)  # let every hot in-process answer pass its 1 s bound
    start = time.perf_counter()
    buckets: dict[int, int] = {}
    reached: list[float] = []
    done = asyncio.Event()

    def window(t: float) -> None:
        slot = int((t - start) * 10)
        buckets[slot] = buckets.get(slot, 0) + 1
        previous = buckets.get(slot - 1, 0)
        if not reached and slot >= 1 and previous * 10 >= 0.9 * target_rps:
            reached.append(slot / 10)
            done.set()

    load = asyncio.ensure_future(_load(host, port, paths, limit, concurrency, "cold", window))
    try:
        await asyncio.wait_for(done.wait(), limit)
    except TimeoutError:
        pass
    load.cancel()
    await asyncio.gather(load, return_exceptions=True)
    first_window = buckets.get(0, 0) * 10
    return (reached[0] if reached else None), first_window, flushed


async def _bench(url: str, redis_url: str | None, seconds: float, concurrency: int) -> dict[str, Any]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    await _wait_ready(host, port)
    queries = await _sample_queries(dt.date.today() + dt.timedelta(days=1))
    rng = random.Random(3)

    def search_path() -> str:
        return rng.choice(queries)

    # Warm-up: every query once, so the warm phase measures cached answers.
    await _load(host, port, search_path, min(3.0, seconds), concurrency, "warm-up")
    hello = await _load(host, port, lambda: "/healthz", seconds, concurrency, "hello")
    search = await _load(host, port, search_path, seconds, concurrency, "search")
    cold: tuple[float | None, float, int] | None = None
    if redis_url:
        cold = await _cold_start(host, port, search_path, concurrency, search.rps, redis_url)
    return {"hello": hello, "search": search, "cold": cold}


def _report(result: dict[str, Any], concurrency: int) -> None:
    hello: Phase = result["hello"]
    search: Phase = result["search"]
    table = Table(title=f"railbook bench search (concurrency {concurrency}, one server process)")
    for column in ("measure", "requests/s", "p50 ms", "p99 ms", "vs hello-world", "statuses"):
        table.add_column(column, justify="right" if column != "measure" else "left")
    for phase in (hello, search):
        table.add_row(
            "GET /healthz" if phase is hello else "search, warm caches",
            f"{phase.rps:,.0f}",
            f"{phase.pct(0.5):.2f}",
            f"{phase.pct(0.99):.2f}",
            "1.00" if phase is hello else f"{phase.rps / hello.rps:.2f}" if hello.rps else "-",
            ", ".join(f"{k}:{v}" for k, v in sorted(phase.statuses.items()))
            + (f", errors:{phase.errors}" if phase.errors else ""),
        )
    cold = result["cold"]
    if cold is not None:
        reached, first, flushed = cold
        table.add_row(
            "cold start → 90 % of warm",
            f"{first:,.0f} in 1st 100 ms",
            "",
            "",
            f"{reached:.1f} s" if reached is not None else "> 30 s",
            f"{flushed} keys flushed",
        )
    else:
        table.add_row(
            "cold start", "skipped (no Redis URL: set RAILBOOK_REDIS_URL with --url)", "", "", "", ""
        )
    console.print(table)


def run(url: str | None = None, seconds: float = 10.0, concurrency: int = 64) -> None:
    """Start a site unless ``url`` is given, measure, print the table, stop what was started."""
    site = Site(url, os.environ.get("RAILBOOK_REDIS_URL")) if url else _start_site()
    try:
        if not url:
            console.print(
                f"started railbook at {site.url} (PostgreSQL {site.database}, Redis {site.redis_url})"
            )
        result = asyncio.run(_bench(site.url, site.redis_url, seconds, concurrency))
        _report(result, concurrency)
    except RuntimeError:
        if site.log is not None:
            site.log.seek(0)
            console.print(site.log.read().decode(errors="replace")[-3000:])
        raise
    finally:
        site.stop()
