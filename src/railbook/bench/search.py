"""``railbook bench search``: search throughput beside a hello-world baseline, and cold-start time.

Unless ``--url`` is given it starts its own site: a scratch PostgreSQL database, a redis-server of its
own on a free port, and ``railbook serve --workers 1`` (uvicorn, one server process, sample network
loaded, sale window opened) as a subprocess, so the ratio is per server process. In one run it
measures, with the same client, the same connections and the same concurrency:
- hello-world (``GET /healthz``) requests/s and latency percentiles;
- warm-cache search, two mixes: a flash crowd (Zipf-like, s = 1.1, over pairs of stops along the
  sample trains on the next three days: a few hot pairs get most requests, the long tail the rest)
  and a uniform mix (uniformly random over 400 along-train pairs and 100 random station pairs);
- cold start: the search caches in Redis are flushed (and the 1 s hot bound left to pass), then
  throughput is counted per 100 ms until a window reaches 90 % of the warm uniform figure.
The three measures are interleaved in slices (hello, flash, uniform, hello, ...) so that a busy
machine's background load falls on all of them alike. The load comes from ``LOAD_PROCESSES``
processes of their own (uvloop, keep-alive HTTP/1.1 on asyncio streams), and the server's and the
load processes' CPU use per measure is reported: a server near 100 % of one CPU is the bottleneck,
not the load generator.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import multiprocessing
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

from rich.console import Console
from rich.table import Table

from railbook.bench.site import PG_ADMIN
from railbook.bench.wire import KeepAliveClient, cpu_seconds, free_port, process_tree
from railbook.kit.clock import beijing_today

console = Console(width=160)  # the table is wide; keep it whole in logs and pipes too


@dataclass
class Phase:
    name: str
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    buckets: dict[int, int] = field(default_factory=dict)  # completions per 100 ms

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


LOAD_PROCESSES = 2
MIXES = ("hello", "flash", "uniform")
LABELS = {
    "hello": "GET /healthz",
    "flash": "search, flash crowd (Zipf)",
    "uniform": "search, uniform random",
}


@dataclass
class Plan:
    """What one load process does: connections, the measure slices (name, start, end on the shared
    ``time.time()`` clock) and the search paths of each mix."""

    host: str
    port: int
    connections: int
    slices: list[tuple[str, float, float]]
    uniform: list[str]
    flash: list[str]
    flash_weights: list[float]  # cumulative
    seed: int


def _load_process(plan: Plan) -> dict[str, Any]:
    """Entry point of a load process: run the plan on uvloop, return counts, latencies, statuses and
    100 ms completion buckets per measure."""
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # plain asyncio still works, just with a slower client
        runner = asyncio.run
    result: dict[str, Any] = runner(_run_plan(plan))
    return result


async def _run_plan(plan: Plan) -> dict[str, Any]:
    rng = random.Random(plan.seed)
    out: dict[str, Any] = {}

    def paths(mix: str) -> Callable[[], str]:
        if mix == "hello":
            return lambda: "/healthz"
        if mix == "flash":
            return lambda: rng.choices(plan.flash, cum_weights=plan.flash_weights)[0]
        if mix.startswith("touch"):  # warm-up: every path of this process's share once, then stop
            it = iter([*plan.uniform, *plan.flash][int(mix[5:]) :: LOAD_PROCESSES])
            return lambda: next(it)
        return lambda: rng.choice(plan.uniform)

    clients = [KeepAliveClient(plan.host, plan.port) for _ in range(plan.connections)]
    try:
        for mix, begin, end in plan.slices:
            now = time.time()
            if begin > now:
                await asyncio.sleep(begin - now)
            slot = out.setdefault(
                mix.split(":")[0], {"latencies": [], "statuses": {}, "errors": 0, "buckets": {}}
            )
            path = paths(mix.split(":")[-1])
            await asyncio.gather(*(_drive(c, path, end, slot, begin) for c in clients))
    finally:
        for c in clients:
            await c.close()
    return out


async def _drive(
    client: KeepAliveClient, path: Callable[[], str], end: float, slot: dict[str, Any], begin: float
) -> None:
    """One connection: the next request as soon as the last is answered, until ``end``."""
    latencies, statuses, buckets = slot["latencies"], slot["statuses"], slot["buckets"]
    while (t0 := time.time()) < end:
        try:
            target = path()
        except StopIteration:  # a warm-up share is done
            return
        try:
            status = (await client.request("GET", target)).status
        except (OSError, asyncio.IncompleteReadError):
            slot["errors"] += 1
            await asyncio.sleep(0.01)
            continue
        t1 = time.time()
        latencies.append(t1 - t0)
        statuses[status] = statuses.get(status, 0) + 1
        window = int((t1 - begin) * 10)
        buckets[window] = buckets.get(window, 0) + 1


def _tree_cpu(pid: int) -> float:
    """CPU seconds of a process and its descendants (``serve``'s API and worker processes)."""
    return sum(cpu_seconds(p) for p in process_tree(pid))


def _run_slices(
    pool: Any, plans: list[Plan], watch: dict[str, int]
) -> tuple[dict[str, Phase], dict[str, dict[str, float]]]:
    """Run the plans in the load processes; merge their results into one Phase per measure, and
    sample the CPU seconds of the watched processes at every slice boundary."""
    futures = [pool.submit(_load_process, plan) for plan in plans]
    cpu: dict[str, dict[str, float]] = {}
    for mix, begin, end in plans[0].slices if watch else []:
        time.sleep(max(0.0, begin - time.time()))
        before = {name: _tree_cpu(pid) for name, pid in watch.items()}
        time.sleep(max(0.0, end - time.time()))
        name = mix.split(":")[0]
        for who, pid in watch.items():
            cpu.setdefault(name, {}).setdefault(who, 0.0)
            cpu[name][who] += _tree_cpu(pid) - before[who]
    phases: dict[str, Phase] = {}
    for future in futures:
        for name, part in future.result().items():
            phase = phases.setdefault(name, Phase(name))
            phase.latencies.extend(part["latencies"])
            phase.errors += part["errors"]
            for k, v in part["statuses"].items():
                phase.statuses[k] = phase.statuses.get(k, 0) + v
            for k, v in part["buckets"].items():
                phase.buckets[k] = phase.buckets.get(k, 0) + v
    for mix, begin, end in plans[0].slices:
        phases[mix.split(":")[0]].seconds += end - begin
    return phases, cpu


async def _sample_queries(date: dt.date, seed: int = 11) -> tuple[list[str], list[str], list[float]]:
    """Search paths: the uniform mix (along-train pairs tomorrow, plus random pairs) and the flash
    crowd's paths (along-train pairs on the next three days) with cumulative Zipf weights."""
    from railbook.services.catalog.sample import sample_network

    data = await sample_network()
    rng = random.Random(seed)
    stations = [s["name"] for s in data["stations"]]
    along: list[tuple[str, str]] = []
    for train in data["trains"]:
        stops = [s["station"] for s in train["stops"]]
        along.extend((stops[i], stops[j]) for i in range(len(stops)) for j in range(i + 1, len(stops)))
    pairs = rng.sample(along, min(len(along), 400))
    pairs += [tuple(rng.sample(stations, 2)) for _ in range(100)]

    def path(a: str, b: str, day: dt.date) -> str:
        return f"/api/v1/trains/search?from={quote(a)}&to={quote(b)}&date={day.isoformat()}"

    uniform = [path(a, b, date) for a, b in pairs]
    flash = [path(a, b, date + dt.timedelta(days=d)) for a, b in rng.sample(along, 400) for d in range(3)]
    rng.shuffle(flash)
    weights, total = [], 0.0
    for rank in range(len(flash)):
        total += 1 / (rank + 1) ** 1.1
        weights.append(total)
    return uniform, flash, weights


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
            from railbook.bench.site import admin_sql

            admin_sql(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')


def _start_site() -> Site:
    from railbook.bench.site import admin_sql

    database = f"railbook_bench_{uuid.uuid4().hex[:8]}"
    admin_sql(f'CREATE DATABASE "{database}"')
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    redis_port, http_port = free_port(), free_port()
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
            [sys.executable, "-m", "railbook.cli", "serve", "--port", str(http_port), "--workers", "1"],
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
            if (await client.request("GET", "/readyz")).status == 200:
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


def _bench(site: Site, seconds: float, concurrency: int) -> dict[str, Any]:
    parts = urlsplit(site.url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    asyncio.run(_wait_ready(host, port))
    uniform, flash, weights = asyncio.run(_sample_queries(beijing_today() + dt.timedelta(days=1)))
    per_process = max(1, concurrency // LOAD_PROCESSES)
    rounds = max(1, round(seconds / 2))
    slice_s = seconds / rounds
    watch = {"server": site.procs[-1].pid} if site.procs else {}

    def plans(build: Callable[[float], list[tuple[str, float, float]]]) -> list[Plan]:
        t0 = time.time() + 1.0  # the processes start, then all begin together
        return [
            Plan(host, port, per_process, build(t0), uniform, flash, weights, seed=101 + i)
            for i in range(LOAD_PROCESSES)
        ]

    def measured(t0: float) -> list[tuple[str, float, float]]:
        slices = []
        at = t0
        for _ in range(rounds):
            for mix in MIXES:
                slices.append((mix, at, at + slice_s))
                at += slice_s
        return slices

    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(LOAD_PROCESSES, mp_context=ctx) as pool:
        # Warm-up: every path of both mixes once (each process its share; the route index loads
        # from the database here, not during the measures), then both mixes briefly.
        t0 = time.time() + 1.0
        touch = [
            Plan(
                host, port, per_process, [(f"warm:touch{i}", t0, t0 + 300.0)], uniform, flash, weights, seed=i
            )
            for i in range(LOAD_PROCESSES)
        ]
        _run_slices(pool, touch, {})
        warm = min(3.0, seconds) / 2
        _run_slices(
            pool, plans(lambda t: [("warm:flash", t, t + warm), ("warm:uniform", t + warm, t + 2 * warm)]), {}
        )
        pids = [p.pid for p in getattr(pool, "_processes", {}).values()]
        watch.update({f"load {i + 1}": pid for i, pid in enumerate(pids)})
        phases, cpu = _run_slices(pool, plans(measured), watch)
        cold: tuple[float | None, float, int] | None = None
        if site.redis_url:
            flushed = asyncio.run(_flush_search_caches(site.redis_url))
            time.sleep(1.1)  # let every hot in-process answer pass its 1 s bound
            cold_phases, _ = _run_slices(pool, plans(lambda t0: [("cold:uniform", t0, t0 + 10.0)]), {})
            buckets = cold_phases["cold"].buckets
            target = 0.9 * phases["uniform"].rps
            reached = next((w / 10 for w in sorted(buckets) if w >= 1 and buckets[w] * 10 >= target), None)
            cold = (reached, buckets.get(0, 0) * 10.0, flushed)
    return {"phases": phases, "cpu": cpu, "cold": cold, "slice": slice_s, "rounds": rounds}


def _report(result: dict[str, Any], concurrency: int) -> None:
    phases: dict[str, Phase] = result["phases"]
    cpu: dict[str, dict[str, float]] = result["cpu"]
    hello = phases["hello"]
    table = Table(
        title=(
            f"railbook bench search (concurrency {concurrency} from {LOAD_PROCESSES} load processes; "
            f"one server process; {result['rounds']} rounds of {result['slice']:.1f} s slices per measure)"
        )
    )
    columns = (
        "measure",
        "requests/s",
        "p50 ms",
        "p99 ms",
        "vs hello-world",
        "server CPU",
        "load CPU",
        "statuses",
    )
    for column in columns:
        table.add_column(column, justify="right" if column != "measure" else "left")
    for mix in MIXES:
        phase = phases[mix]
        used = cpu.get(mix, {})
        load = sum(v for k, v in used.items() if k.startswith("load"))
        table.add_row(
            LABELS[mix],
            f"{phase.rps:,.0f}",
            f"{phase.pct(0.5):.2f}",
            f"{phase.pct(0.99):.2f}",
            f"{phase.rps / hello.rps:.2f}" if hello.rps else "-",
            f"{used['server'] / phase.seconds:.0%}" if "server" in used else "-",
            f"{load / phase.seconds:.0%}" if used else "-",
            ", ".join(f"{k}:{v}" for k, v in sorted(phase.statuses.items()))
            + (f", errors:{phase.errors}" if phase.errors else ""),
        )
    cold = result["cold"]
    if cold is not None:
        reached, first, flushed = cold
        table.add_row(
            "cold start → 90 % of warm uniform",
            f"{first:,.0f} in 1st 100 ms",
            "",
            "",
            f"{reached:.1f} s" if reached is not None else "> 10 s",
            "",
            "",
            f"{flushed} keys flushed",
        )
    else:
        table.add_row("cold start", "skipped (no Redis URL: set RAILBOOK_REDIS_URL with --url)", *[""] * 6)
    console.print(table)
    console.print(
        "CPU is per measure over its slices (100 % = one CPU). A server near 100 % is the bottleneck; "
        f"this machine has {os.cpu_count()} CPUs shared by the server, the load and anything else running."
    )


def run(url: str | None = None, seconds: float = 10.0, concurrency: int = 64) -> None:
    """Start a site unless ``url`` is given, measure, print the table, stop what was started."""
    site = Site(url, os.environ.get("RAILBOOK_REDIS_URL")) if url else _start_site()
    try:
        if not url:
            console.print(
                f"started railbook at {site.url} (PostgreSQL {site.database}, Redis {site.redis_url})"
            )
        result = _bench(site, seconds, concurrency)
        _report(result, concurrency)
    except RuntimeError:
        if site.log is not None:
            site.log.seek(0)
            console.print(site.log.read().decode(errors="replace")[-3000:])
        raise
    finally:
        site.stop()
