"""``railbook bench orders``: a flash sale on one train-day, beside hello-world requests/s of the same server.

Black-box over HTTP, like ``bench flash-sale``. With no ``--url`` it starts its own site
(:mod:`railbook.bench.site`): a scratch PostgreSQL database, a Redis logical database claimed for the
run, ONE uvicorn API process (``railbook api --workers 1``, rate limits off, sale tokens above the hot
day's seats) and one ``railbook worker``. With the default 2,000 tokens a day of more seats than that
answers ``SALE_BUSY`` while 2,000 accepted orders wait for their commit (the bound working as meant);
here the accept path itself is measured.
The load comes from separate processes (``--load-procs``), each a small keep-alive HTTP/1.1 client on
asyncio streams, so the server's single process is what is measured, for hello-world and for orders.

Before the timed part: a hot train (``--stops`` stops, ``--seats`` second/first-class seats) and some
cold trains on one sale day, ``--members`` members registered through the API with 3 passengers each,
and their access tokens fetched by logging in. Timed part: hello-world (``GET /healthz``)
for a few seconds, then the crowd: most orders (``--hot-share``) on the hot train-day, over realistic
journeys (a third end to end, the rest long or short hops), one to three passengers each, until the
day is sold out and on (SOLD_OUT answers are cheap and counted apart). A passenger is seated once
(one person, one seat at a time: every train keeps the same hours); a few orders (``REPEAT_SHARE``)
name passengers already seated, a retry or another train tried, and are refused (TRIP_CONFLICT or
DUPLICATE_ORDER). Each order takes passengers still free, so a crowd of too few members runs out of
them before the end (the lanes then stop). Then the committed count is
read from the database until every accepted order is written, which gives committed/s during the
crowd (by ``order.updated_at``) and the drain time after the crowd stopped. With its own site it
also reads the CPU time the API process spent per hello-world request and per order answer (over the
whole crowd, and while seats remained, when nearly every answer is a 202), and the worker per
committed order (from /proc); the load processes report their own CPU per request. These hold
steadier than requests/s, which depend on what else shares the cores.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import multiprocessing as mp
import os
import random
import time
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
from rich.console import Console
from rich.table import Table

from railbook.bench.figures import pct
from railbook.bench.scenario import post_json, register_members
from railbook.bench.site import ADMIN_MOBILE, ADMIN_PASSWORD, railbook_site
from railbook.bench.wire import KeepAliveClient, cpu_at, cpu_seconds, cpu_trace
from railbook.kit.clock import beijing_today

console = Console()

PASSENGERS_PER_MEMBER = 3
COLD_TRAINS = 6
HELLO_SECONDS = 4.0
# Orders naming passengers already seated (a retry whose answer was lost, another train tried).
REPEAT_SHARE = 0.03
MAX_ROWS, MAX_CARRIAGES = 30, 40  # the contract's largest carriage and train


@dataclass(frozen=True)
class Plan:
    """What the load processes need: the day, the trains, the riders (token, passenger ids)."""

    host: str
    port: int
    date: str
    hot: dict[str, Any]
    cold: list[dict[str, Any]]
    riders: list[tuple[str, list[int]]]
    hot_share: float


@dataclass
class Tally:
    """Answers of one load process: latencies (ms) by outcome."""

    latencies: dict[str, list[float]] = field(default_factory=dict)
    requests: int = 0
    accepted_at: list[float] = field(default_factory=list)  # wall-clock times of the 202 answers
    refused_at: list[float] = field(default_factory=list)  # wall-clock times of the other answers
    # Wall-clock time of the first SOLD_OUT answer for the hot train's second class (the bulk of its
    # seats): until then the crowd meets seats for sale, after it mostly sold-out answers.
    first_sold_out: float = float("inf")
    cpu_s: float = 0.0  # CPU time of the load process(es) over the timed part

    def add(self, outcome: str, ms: float) -> None:
        self.latencies.setdefault(outcome, []).append(ms)
        self.requests += 1

    def merge(self, other: Tally) -> None:
        for k, v in other.latencies.items():
            self.latencies.setdefault(k, []).extend(v)
        self.requests += other.requests
        self.accepted_at.extend(other.accepted_at)
        self.refused_at.extend(other.refused_at)
        self.first_sold_out = min(self.first_sold_out, other.first_sold_out)
        self.cpu_s += other.cpu_s

    def count(self, outcome: str) -> int:
        return len(self.latencies.get(outcome, []))

    def all_latencies(self) -> list[float]:
        return [x for v in self.latencies.values() for x in v]


async def _prepare(url: str, *, members: int, stops: int, seats: int) -> Plan:
    """Trains on sale and members with passengers, through the API; tokens by logging in."""
    limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        login = await post_json(
            client, "/api/v1/auth/login", {"mobile": ADMIN_MOBILE, "password": ADMIN_PASSWORD}
        )
        admin = {"Authorization": f"Bearer {login['access_token']}"}
        tag = uuid.uuid4().int
        stations = []
        for k in range(stops):
            code = "".join(chr(65 + (tag // 26 ** (3 * k + d)) % 26) for d in range(3))
            name = f"测{code}{k}"
            await post_json(client, "/api/v1/admin/stations", {"name": name, "code": code}, admin)
            stations.append(name)
        date = (beijing_today() + dt.timedelta(days=2)).isoformat()
        stop_specs = [
            {
                "station": s,
                **({"arrives": f"{6 + k:02d}:00"} if k else {}),
                **({"departs": f"{6 + k:02d}:03"} if k < stops - 1 else {}),
                "km": 120 * k,
            }
            for k, s in enumerate(stations)
        ]
        # Hot train: one first-class carriage per eight, the rest second class (full-length carriages
        # of MAX_ROWS rows), as many as asked up to the timetable's MAX_CARRIAGES (5,880 seats).
        second_rows, first_rows = MAX_ROWS * 5, MAX_ROWS * 4
        n_first = max(1, seats // (8 * first_rows))
        n_second = max(1, min(MAX_CARRIAGES - n_first, (seats - n_first * first_rows) // second_rows))
        carriages = [{"carriage": c + 1, "seat_class": "first", "rows": MAX_ROWS} for c in range(n_first)]
        carriages += [
            {"carriage": n_first + c + 1, "seat_class": "second", "rows": MAX_ROWS} for c in range(n_second)
        ]
        base = 7000 + tag % 2000
        hot: dict[str, Any] = {
            "train_code": f"G{base}",
            "stations": stations,
            "classes": ["second", "first"],
            "seats": n_first * first_rows + n_second * second_rows,
        }
        spec = {"code": hot["train_code"], "kind": "G", "stops": stop_specs, "carriages": carriages}
        await post_json(client, "/api/v1/admin/trains", spec, admin)
        cold = []
        for t in range(COLD_TRAINS):
            code = f"G{base + 1 + t}"
            carriages = [{"carriage": c, "seat_class": "second", "rows": 20} for c in range(1, 9)]
            spec = {"code": code, "kind": "G", "stops": stop_specs, "carriages": carriages}
            await post_json(client, "/api/v1/admin/trains", spec, admin)
            cold.append({"train_code": code, "stations": stations, "classes": ["second"]})
        await post_json(client, "/api/v1/admin/sales/open", {"date": date}, admin)
        # Members through registration, tokens by logging in, before the timed part.
        prefix = f"18{tag % 100:02d}"
        members_in = await register_members(client, members, PASSENGERS_PER_MEMBER, prefix)
    riders = [(token, rider.passengers) for rider, token in members_in]
    parts = urlsplit(url)
    return Plan(parts.hostname or "127.0.0.1", parts.port or 80, date, hot, cold, riders, 0.85)


# --------------------------------------------------------------------------------------------
# Load processes.


def _journey(rng: random.Random, n: int) -> tuple[int, int]:
    """Realistic journeys: a third end to end, a third long (most of the line), the rest any hop."""
    roll = rng.random()
    if roll < 0.34:
        return 0, n - 1
    if roll < 0.67:
        i = rng.randrange(0, max(1, n // 3))
        return i, rng.randrange(max(i + 1, n - 1 - n // 3), n)
    i = rng.randrange(n - 1)
    return i, rng.randrange(i + 1, n)


async def _hello_loop(plan: Plan, start: float, deadline: float, connections: int) -> Tally:
    tally = Tally()

    async def one() -> None:
        client = KeepAliveClient(plan.host, plan.port)
        # Connected before the timed part, as for the crowd: requests are measured, not handshakes.
        await client.connect()
        await asyncio.sleep(max(0.0, start - time.time()))
        try:
            while time.time() < deadline:
                t0 = time.perf_counter()
                answer = await client.request("GET", "/healthz")
                tally.add(str(answer.status), (time.perf_counter() - t0) * 1000)
        finally:
            await client.close()

    await _timed(tally, start, [one() for _ in range(connections)])
    return tally


async def _timed(tally: Tally, start: float, connections: list[Coroutine[Any, Any, None]]) -> None:
    """Run the connections; the load process's own CPU time from ``start`` goes to the tally."""

    async def clock() -> None:
        await asyncio.sleep(max(0.0, start - time.time()))
        tally.cpu_s = -time.process_time()

    await asyncio.gather(clock(), *connections)
    tally.cpu_s += time.process_time()


async def _crowd_loop(plan: Plan, start: float, deadline: float, connections: int, seed: int) -> Tally:
    """Each connection walks its own members: an order per turn, on the hot day with ``hot_share``."""
    tally = Tally()
    rng = random.Random(seed)
    # Passengers still free per rider: one person, one seat at a time (every train here keeps the same
    # hours, and a person wants one journey of the sale day), so an accepted order uses them up on
    # every train. Now and then (REPEAT_SHARE) an order names passengers already seated, as a crowd
    # does: a retry whose answer was lost, or a passenger trying another train; it is refused.
    free: dict[int, list[int]] = {}
    seated: dict[int, list[int]] = {}
    riders = list(range(len(plan.riders)))
    rng.shuffle(riders)
    lanes = [riders[k::connections] for k in range(connections)]

    async def one(lane: list[int]) -> None:
        client = KeepAliveClient(plan.host, plan.port)
        # Open before the sale does, like clients waiting on the sale page: the timed part measures
        # orders, not TCP handshakes.
        await client.connect()
        await asyncio.sleep(max(0.0, start - time.time()))
        turn = idle = 0
        try:
            while time.time() < deadline and lane:
                r = lane[turn % len(lane)]
                turn += 1
                train = plan.hot if rng.random() < plan.hot_share else rng.choice(plan.cold)
                pool = free.setdefault(r, list(plan.riders[r][1]))
                repeat = bool(pool and seated.get(r)) and rng.random() < REPEAT_SHARE
                if repeat:
                    pool = seated[r]
                elif not pool:
                    # Passengers used up: give the loop back, and stop once the lane has none left.
                    idle += 1
                    if idle > 50 * len(lane):
                        break
                    await asyncio.sleep(0)
                    continue
                idle = 0
                k = min(len(pool), rng.choices((1, 2, 3), (70, 25, 5))[0])
                pids = pool[:k]
                i, j = _journey(rng, len(train["stations"]))
                seat_class = "first" if "first" in train["classes"] and rng.random() < 0.15 else "second"
                body = {
                    "date": plan.date,
                    "train_code": train["train_code"],
                    "from": train["stations"][i],
                    "to": train["stations"][j],
                    "passengers": [{"passenger_id": p, "seat_class": seat_class} for p in pids],
                }
                t0 = time.perf_counter()
                answer = await client.request("POST", "/api/v1/orders", body, plan.riders[r][0])
                ms = (time.perf_counter() - t0) * 1000
                status = answer.status
                if status == 202 and not repeat:
                    del pool[:k]
                    seated.setdefault(r, []).extend(pids)
                if status == 202:
                    tally.add("202", ms)
                    tally.accepted_at.append(time.time())
                else:
                    code = answer.error_code()
                    tally.add(f"{status} {code}", ms)
                    tally.refused_at.append(time.time())
                    if code == "SOLD_OUT" and train is plan.hot and seat_class == "second":
                        tally.first_sold_out = min(tally.first_sold_out, time.time())
        finally:
            await client.close()

    await _timed(tally, start, [one(lane) for lane in lanes])
    return tally


def _load_process(task: str, plan: Plan, start: float, deadline: float, connections: int, seed: int) -> Tally:
    """Entry point of one load process (spawned): runs its share of the connections, on uvloop where
    installed (the load shares the machine's cores with the server: the lighter, the better)."""
    try:
        import uvloop

        run: Any = uvloop.run
    except ImportError:  # pragma: no cover - platforms without uvloop
        run = asyncio.run
    if task == "hello":
        return run(_hello_loop(plan, start, deadline, connections))  # type: ignore[no-any-return]
    return run(_crowd_loop(plan, start, deadline, connections, seed))  # type: ignore[no-any-return]


def _spread(
    task: str, plan: Plan, seconds: float, concurrency: int, procs: int
) -> tuple[Tally, float, float]:
    """Run ``task`` for ``seconds`` from ``procs`` processes; the start is synchronised by wall clock."""
    ctx = mp.get_context("spawn")
    start = time.time() + 1.5  # time for the processes to start
    deadline = start + seconds
    shares = [concurrency // procs + (1 if k < concurrency % procs else 0) for k in range(procs)]
    with ctx.Pool(procs) as pool:
        jobs = []
        for k, n in enumerate(shares):
            sub = plan
            if task == "crowd":  # disjoint riders per process: no cross-process duplicates
                sub = Plan(
                    plan.host,
                    plan.port,
                    plan.date,
                    plan.hot,
                    plan.cold,
                    plan.riders[k::procs],
                    plan.hot_share,
                )
            jobs.append(pool.apply_async(_load_process, (task, sub, start, deadline, n, 1000 + k)))
        total = Tally()
        for job in jobs:
            total.merge(job.get(timeout=seconds + 120))
    return total, start, deadline


# --------------------------------------------------------------------------------------------
# Figures from the system of record.


async def _committed_after(dsn: str, accepted: int, crowd_start: float, crowd_end: float) -> dict[str, Any]:
    """Wait until every accepted order is committed; committed during the crowd, and the drain time."""
    conn = await asyncpg.connect(dsn)
    try:
        n = 0
        for _ in range(1200):
            n = int(await conn.fetchval('SELECT count(*) FROM "order" WHERE status <> $1', "PENDING"))
            if n >= accepted:
                break
            await asyncio.sleep(0.05)
        row = await conn.fetchrow(
            'SELECT count(*) FILTER (WHERE updated_at <= to_timestamp($1)), max(updated_at) FROM "order"',
            crowd_end,
        )
    finally:
        await conn.close()
    during = int(row[0]) if row else 0
    last = row[1].timestamp() if row and row[1] is not None else crowd_end
    return {
        "committed": n,
        "during": during,
        "drain_s": max(0.0, last - crowd_end) if n >= accepted else float("nan"),
        "per_s": during / max(1e-9, crowd_end - crowd_start),
    }


def _report(
    plan: Plan,
    seconds: float,
    concurrency: int,
    procs: int,
    hello: Tally,
    hello_s: float,
    crowd: Tally,
    crowd_start: float,
    crowd_end: float,
    db: dict[str, Any] | None,
    cpu: dict[str, float],
) -> None:
    crowd_s = crowd_end - crowd_start
    hello_rate = hello.requests / hello_s
    window_end = min(crowd_end, crowd.first_sold_out)
    window_s = max(1e-9, window_end - crowd_start)
    in_window = sum(1 for t in crowd.accepted_at if t <= window_end)
    refused_in_window = sum(1 for t in crowd.refused_at if t <= window_end)
    accepted = crowd.count("202")
    sold_out = crowd.count("409 SOLD_OUT")
    accepted_rate = accepted / crowd_s
    table = Table(
        title=f"railbook bench orders — {seconds:.0f}s crowd, {concurrency} connections from {procs} "
        f"load process(es), 1 API process"
    )
    table.add_column("measure")
    table.add_column("value", justify="right")
    hello_lat = hello.all_latencies()
    table.add_row(
        "hello world (GET /healthz) req/s, p50/p99 ms",
        f"{hello_rate:,.0f}  ({pct(hello_lat, 0.5):.1f} / {pct(hello_lat, 0.99):.1f})",
    )
    table.add_row("hot train-day seats", f"{plan.hot['seats']:,} ({len(plan.hot['stations'])} stops)")
    table.add_row("members (tokens fetched before)", f"{len(plan.riders):,}")
    table.add_row("order requests/s (all answers)", f"{crowd.requests / crowd_s:,.0f}")
    table.add_row("orders accepted/s (202)", f"{accepted_rate:,.0f}")
    table.add_row("sold-out answers/s (409 SOLD_OUT)", f"{sold_out / crowd_s:,.0f}")
    table.add_row("accepted/s ÷ hello req/s (whole crowd)", f"{accepted_rate / hello_rate:.2f}")
    table.add_row("seats remained (until the hot second class first sold out), s", f"{window_s:.1f}")
    table.add_row("orders accepted/s while seats remained", f"{in_window / window_s:,.0f}")
    table.add_row(
        "[bold]accepted/s while seats remained ÷ hello req/s[/bold]",
        f"[bold]{in_window / window_s / hello_rate:.2f}[/bold]",
    )
    table.add_row(
        "other answers/s while seats remained (sold-out journeys and classes)",
        f"{refused_in_window / window_s:,.0f}",
    )
    table.add_row("(all order answers)/s ÷ hello req/s", f"{crowd.requests / crowd_s / hello_rate:.2f}")
    for outcome in sorted(crowd.latencies):
        lat = crowd.latencies[outcome]
        table.add_row(
            f"  {outcome}: count, p50/p99 ms", f"{len(lat):,}  ({pct(lat, 0.5):.1f} / {pct(lat, 0.99):.1f})"
        )
    table.add_row(
        "all answers p50 / p99 ms",
        f"{pct(crowd.all_latencies(), 0.5):.1f} / {pct(crowd.all_latencies(), 0.99):.1f}",
    )
    load_hello = hello.cpu_s / max(1, hello.requests) * 1e6
    load_order = crowd.cpu_s / max(1, crowd.requests) * 1e6
    table.add_row(
        "load processes' CPU per hello-world / per order request, µs",
        f"{load_hello:,.0f} / {load_order:,.0f}",
    )
    # CPU time per request of the API process itself (not the load, the worker or the stores): the
    # cost of an order next to the cost of a hello-world request, steady whatever else the machine does.
    hello_cpu = cpu.get("api_hello", float("nan")) / max(1, hello.requests) * 1e6
    order_cpu = cpu.get("api_crowd", float("nan")) / max(1, crowd.requests) * 1e6
    if order_cpu == order_cpu:  # not NaN: the API process was ours to watch
        table.add_row("API process CPU per hello-world request, µs", f"{hello_cpu:,.0f}")
        table.add_row("API process CPU per order answer, µs", f"{order_cpu:,.0f}")
        window_cpu = cpu.get("api_window", float("nan")) / max(1, in_window + refused_in_window) * 1e6
        if window_cpu == window_cpu:
            table.add_row(
                "API process CPU per order answer while seats remained (~all 202), µs", f"{window_cpu:,.0f}"
            )
        table.add_row(
            "[bold]hello-world CPU ÷ order CPU (API process)[/bold]",
            f"[bold]{hello_cpu / order_cpu:.2f}[/bold]",
        )
    if db is not None:
        table.add_row("committed (database)", f"{db['committed']:,} of {accepted:,}")
        table.add_row("committed/s during the crowd (by updated_at)", f"{db['per_s']:,.0f}")
        table.add_row("queue drained after the crowd stopped, s", f"{db['drain_s']:.2f}")
        worker_cpu = cpu.get("worker", float("nan")) / max(1, db["committed"]) * 1e6
        if worker_cpu == worker_cpu:
            table.add_row("worker process CPU per committed order, µs", f"{worker_cpu:,.0f}")
    console.print(table)


def run(url: str | None, seconds: float, concurrency: int, **options: Any) -> None:
    """Entry point of ``railbook bench orders``."""
    import logging

    logging.getLogger("httpx").setLevel(logging.WARNING)
    procs = int(options.get("load_procs", 2))
    members = int(options.get("members", 4000))
    stops = int(options.get("stops", 8))
    seats = int(options.get("seats", 6000))

    def measure(site_url: str, dsn: str | None, api_pid: int | None, worker_pid: int | None) -> None:
        console.print(f"preparing: {members} members, hot train of ~{seats} seats, {stops} stops ...")
        plan = asyncio.run(_prepare(site_url, members=members, stops=stops, seats=seats))
        console.print(f"hello world for {HELLO_SECONDS:.0f}s, then the crowd for {seconds:.0f}s ...")
        a0 = cpu_seconds(api_pid)
        hello, h0, h1 = _spread("hello", plan, HELLO_SECONDS, concurrency, procs)
        a1, w1 = cpu_seconds(api_pid), cpu_seconds(worker_pid)
        with cpu_trace(api_pid) as trace:
            crowd, c0, c1 = _spread("crowd", plan, seconds, concurrency, procs)
        a2 = cpu_seconds(api_pid)
        db = asyncio.run(_committed_after(dsn, crowd.count("202"), c0, c1)) if dsn else None
        cpu = {"api_hello": a1 - a0, "api_crowd": a2 - a1, "worker": cpu_seconds(worker_pid) - w1}
        cpu["api_window"] = cpu_at(trace, min(c1, crowd.first_sold_out)) - cpu_at(trace, c0)
        _report(plan, seconds, concurrency, procs, hello, h1 - h0, crowd, c0, c1, db, cpu)

    if url:
        # The committed figures need the server's database (read only): RAILBOOK_DATABASE_URL.
        db_url = os.environ.get("RAILBOOK_DATABASE_URL")
        measure(url, db_url.replace("postgresql+asyncpg://", "postgresql://") if db_url else None, None, None)
        return
    # One API process; sale tokens above the hot day's seats, so the accept path itself is measured.
    tokens = {"RAILBOOK_SALE_TOKENS_PER_TRAIN_DAY": "100000"}
    with railbook_site(api_workers=1, redis_db=6, extra_env=tokens) as site:
        api_pid = site.pids["api"]
        console.print(f"API process pid {api_pid} (attach a profiler: py-spy record --pid {api_pid})")
        measure(site.url, site.dsn, api_pid, site.pids["worker"])
