"""``railbook bench reads``: what a passenger reads back, beside a hello-world baseline.

railbook runs in distributed mode (``bench.site``: a scratch PostgreSQL database, a claimed Redis
database, ``railbook api`` with one process and one ``railbook worker``), prepared through the API as
the flash-sale bench prepares its sale (trains of 30 stops, members with five passengers). Each member
then books orders of the realistic mix (1–5 passengers, random journeys, a third with seat letters)
until its passengers are seated, pays four in five and cancels the rest, so that the lists read back
hold what a traveller's would.

Measured in interleaved slices (hello, order, orders, tickets, me, hello, ...) with the same load
processes and connections, so that a busy machine's background load falls on every route alike:
``GET /healthz``, ``GET /orders/{id}`` (one of the member's own final orders), ``GET /orders``,
``GET /tickets`` and ``GET /me``, each request under a random member's token. Reported per route:
requests/s and their ratio to hello-world's in the same run, latency p50 / mean / p99, the API
process's CPU per request, and the load processes' CPU (the load generator must not be the limit).
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from railbook.bench import site as sites
from railbook.bench.crowd import journey
from railbook.bench.scenario import MEMBER_PASSWORD, Plan, Rider, Scenario, prepare
from railbook.bench.wire import KeepAliveClient, cpu_seconds

console = Console(width=140)

ROUTES = ("hello", "order", "orders", "tickets", "me")
LIST_PATHS = {"orders": "/api/v1/orders", "tickets": "/api/v1/tickets", "me": "/api/v1/me"}
LETTERS = "ABCDF"
QUEUED = ("INIT", "PENDING")


@dataclass(frozen=True)
class Reader:
    """A member the load reads as: its access token and its final orders' ids."""

    token: str
    orders: tuple[str, ...]


@dataclass(frozen=True)
class Load:
    """One load process's part: where, as whom, with how many connections, and the slices to play."""

    host: str
    port: int
    readers: tuple[Reader, ...]
    connections: int
    slices: tuple[tuple[str, float, float], ...]  # (route, start, end) in wall-clock seconds
    seed: int


# --------------------------------------------------------------------------------------------
# Preparing the read model: orders booked, paid or cancelled, through the API.


async def _call(client: httpx.AsyncClient, method: str, path: str, token: str, body: Any = None) -> Any:
    """One request, retried after ``Retry-After`` while the server sheds load; the JSON answer."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    for _ in range(100):
        answer = await client.request(method, path, json=body, headers=headers)
        if answer.status_code not in (429, 503):
            return answer.json() | {"_status": answer.status_code}
        await asyncio.sleep(float(answer.headers.get("retry-after", "0.5")))
    raise RuntimeError(f"{method} {path}: no answer after 100 tries")


async def _book(client: httpx.AsyncClient, plan: Plan, rider: Rider, rng: random.Random) -> Reader | None:
    """The member's orders of the realistic mix until its passengers are seated; each waited for
    until final, then paid (four in five) or cancelled."""
    login = await _call(
        client, "POST", "/api/v1/auth/login", "", {"mobile": rider.mobile, "password": MEMBER_PASSWORD}
    )
    token = str(login["access_token"])
    free, done = list(rider.passengers), []
    while free:
        n = min(len(free), rng.randint(1, 5))
        chosen, free = free[:n], free[n:]
        i, j = journey(rng, len(plan.stations))
        lettered = rng.random() < 0.3
        passengers = [
            {"passenger_id": p, "seat_class": "second", **({"seat_pref": LETTERS[k]} if lettered else {})}
            for k, p in enumerate(chosen)
        ]
        body = {
            "date": plan.date,
            "train_code": rng.choice(plan.trains),
            "from": plan.stations[i],
            "to": plan.stations[j],
            "passengers": passengers,
        }
        placed = await _call(client, "POST", "/api/v1/orders", token, body)
        if placed["_status"] != 202:
            continue
        order_id = placed["order_id"]
        for _ in range(300):  # a poll every 0.2 s, as a client would, until the order is final
            if (await _call(client, "GET", f"/api/v1/orders/{order_id}", token))["status"] not in QUEUED:
                break
            await asyncio.sleep(0.2)
        pay = rng.random() < 0.8
        after = f"/api/v1/orders/{order_id}/" + ("pay" if pay else "cancel")
        await _call(client, "POST", after, token, {"method": "mock"} if pay else None)
        done.append(order_id)
    return Reader(token, tuple(done)) if done else None


async def book_everyone(url: str, plan: Plan, seed: int) -> list[Reader]:
    """Every member's orders (``_book``), 32 members at a time."""
    rng = random.Random(seed)
    sem = asyncio.Semaphore(32)
    limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def one(rider: Rider, seed: int) -> Reader | None:
            async with sem:
                return await _book(client, plan, rider, random.Random(seed))

        found = await asyncio.gather(*(one(r, rng.randrange(2**32)) for r in plan.riders))
    return [r for r in found if r is not None]


# --------------------------------------------------------------------------------------------
# The load: keep-alive connections, one request after another, in slices of one route each.


def _load_process(load: Load) -> dict[str, Any]:
    """Entry point of a load process: play the slices, return per route the latencies, statuses and
    this process's CPU seconds."""
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # plain asyncio still works, with a slower client
        runner = asyncio.run
    result: dict[str, Any] = runner(_play(load))
    return result


async def _play(load: Load) -> dict[str, Any]:
    rng = random.Random(load.seed)
    out: dict[str, Any] = {r: {"latencies": [], "statuses": {}, "errors": 0} for r in ROUTES}
    clients = [KeepAliveClient(load.host, load.port) for _ in range(load.connections)]
    started = time.process_time()

    def target(route: str) -> tuple[str, str | None]:
        reader = rng.choice(load.readers)
        if route == "hello":
            return "/healthz", None
        if route == "order":
            return f"/api/v1/orders/{rng.choice(reader.orders)}", reader.token
        return LIST_PATHS[route], reader.token

    async def drive(client: KeepAliveClient, route: str, end: float) -> None:
        slot = out[route]
        while (t0 := time.time()) < end:
            path, token = target(route)
            try:
                answer = await client.request("GET", path, token=token)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                slot["errors"] += 1
                await asyncio.sleep(0.01)
                continue
            slot["latencies"].append(time.time() - t0)
            slot["statuses"][answer.status] = slot["statuses"].get(answer.status, 0) + 1

    try:
        await asyncio.gather(*(c.connect() for c in clients))
        for route, begin, end in load.slices:
            await asyncio.sleep(max(0.0, begin - time.time()))
            await asyncio.gather(*(drive(c, route, end) for c in clients))
    finally:
        for c in clients:
            await c.close()
    out["cpu_s"] = time.process_time() - started
    return out


def _slices(seconds: float, rounds: int, start: float) -> tuple[tuple[str, float, float], ...]:
    """``rounds`` rounds of one slice per route, ``seconds`` per route in all, starting at ``start``."""
    each = seconds / rounds
    out, t = [], start
    for _ in range(rounds):
        for route in ROUTES:
            out.append((route, t, t + each))
            t += each + 0.05  # a breath between slices: no request of one counts in the next
    return tuple(out)


def measure(
    site: sites.Site, readers: list[Reader], seconds: float, load_procs: int, connections: int
) -> dict[str, Any]:
    """The interleaved slices, played by ``load_procs`` processes; the API process's CPU read at every
    slice boundary."""
    host_port = site.url.rsplit(":", 1)
    host, port = host_port[0].removeprefix("http://"), int(host_port[1])
    slices = _slices(seconds, rounds=max(1, int(seconds // 2)), start=time.time() + 3.0)
    per_proc = max(1, connections // load_procs)
    loads = [
        Load(host, port, tuple(readers[k::load_procs]), per_proc, slices, seed=k) for k in range(load_procs)
    ]
    api_pid = site.pids["api"]
    cpu = dict.fromkeys(ROUTES, 0.0)
    with ProcessPoolExecutor(load_procs, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(_load_process, load) for load in loads]
        for route, begin, end in slices:
            time.sleep(max(0.0, begin - time.time()))
            before = cpu_seconds(api_pid)
            time.sleep(max(0.0, end - time.time()))
            cpu[route] += cpu_seconds(api_pid) - before
        parts = [f.result() for f in futures]
    slice_s = {r: sum(e - b for name, b, e in slices if name == r) for r in ROUTES}
    result: dict[str, Any] = {"load_cpu_s": sum(p["cpu_s"] for p in parts), "routes": {}}
    for route in ROUTES:
        latencies = sorted(x for p in parts for x in p[route]["latencies"])
        statuses: dict[str, int] = {}
        for p in parts:
            for status, n in p[route]["statuses"].items():
                statuses[str(status)] = statuses.get(str(status), 0) + n
        n = len(latencies)
        result["routes"][route] = {
            "requests": n,
            "per_s": n / slice_s[route],
            "p50_ms": 1000 * latencies[n // 2] if n else None,
            "mean_ms": 1000 * statistics.fmean(latencies) if n else None,
            "p99_ms": 1000 * latencies[min(n - 1, int(n * 0.99))] if n else None,
            "statuses": statuses,
            "errors": sum(p[route]["errors"] for p in parts),
            "api_cpu_us": 1e6 * cpu[route] / n if n else None,
        }
    return result


def _report(result: dict[str, Any]) -> None:
    routes = result["routes"]
    hello = routes["hello"]["per_s"] or 1.0
    names = {
        "hello": "GET /healthz",
        "order": "GET /orders/{id}",
        "orders": "GET /orders",
        "tickets": "GET /tickets",
        "me": "GET /me",
    }
    table = Table(
        title=f"railbook bench reads — {result['members']:,} members, {result['orders']:,} orders read back"
    )
    for column in ("route", "req/s", "÷ hello", "p50 / mean / p99 ms", "API CPU µs/req", "statuses"):
        table.add_column(column, justify="right" if column not in ("route", "statuses") else "left")
    for route in ROUTES:
        r = routes[route]
        table.add_row(
            names[route],
            f"{r['per_s']:,.0f}",
            f"{r['per_s'] / hello:.2f}",
            f"{r['p50_ms']:.1f} / {r['mean_ms']:.1f} / {r['p99_ms']:.1f}" if r["requests"] else "-",
            f"{r['api_cpu_us']:,.0f}" if r["api_cpu_us"] is not None else "-",
            ", ".join(f"{k}: {v:,}" for k, v in sorted(r["statuses"].items())),
        )
    console.print(table)
    console.print(f"load processes' CPU over the slices: {result['load_cpu_s']:.1f} s")


def run(
    *, members: int, seconds: float, load_procs: int, connections: int, out: Path | None
) -> dict[str, Any]:
    """Prepare, book, measure, print; the result as a dict (and as JSON under ``out``)."""
    scenario = Scenario(members=members)
    with sites.railbook_site(api_workers=1, redis_db=4) as site:
        console.rule(f"railbook at {site.url} (api pid {site.pids['api']})")
        plan = asyncio.run(prepare(site.url, scenario, say=console.print))
        readers = asyncio.run(book_everyone(site.url, plan, scenario.seed))
        orders = sum(len(r.orders) for r in readers)
        console.print(f"  {orders:,} orders of {len(readers):,} members final (four in five paid)")
        result = measure(site, readers, seconds, load_procs, connections)
    result |= {
        "members": len(readers),
        "orders": orders,
        "seconds": seconds,
        "load_procs": load_procs,
        "connections": connections,
    }
    _report(result)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "reads.json").write_text(json.dumps(result, indent=2))
        console.print(f"result: {out / 'reads.json'}")
    return result
