"""The crowd of the flash-sale bench: virtual passengers in load processes of their own.

Each load process runs its share of the members on uvloop over a pool of keep-alive connections.
Like 12306's passengers, the crowd logs in before the sale opens (a waiting room, timed apart: an
Argon2 login costs far more CPU than an order, and nobody waits to log in at the minute of release).
From the sale's start, a virtual passenger arrives within the ramp, then until its passengers are
seated (or it gives up): searches a journey, picks a train with seats left, books 1-5 of its
passengers (about a third of the orders ask for seat letters), polls the order every second like a
12306 client until its status is final, then pays most orders, cancels some, leaves a few unpaid,
and refunds a ticket of some paid ones. 429/503 answers are retried after their ``Retry-After``.
Every event carries a wall-clock time so that it lines up with the database's timestamps; the
process reports its own CPU.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import random
import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import quote

from railbook.bench.scenario import MEMBER_PASSWORD, Plan, Rider
from railbook.bench.wire import Answer, ClientPool

FINAL = {"SUCCESS", "EMPTY", "FAILURE", "CANCEL"}
LETTERS = {"business": "ACF", "first": "ACDF", "second": "ABCDF"}
# Live counters, one row per load process in a shared array (read by the display).
COUNTERS = (
    "logins",
    "searches",
    "posted",
    "accepted",
    "refused",
    "seen_final",
    "seen_success",
    "tickets_seen",
    "paid",
    "cancelled",
    "refunded",
    "retried",
    "errors",
    "done",
)
C = {name: k for k, name in enumerate(COUNTERS)}
MAX_ATTEMPTS = 6
POLL_EVERY_S = 1.0


@dataclass
class Tally:
    """What one load process saw."""

    posts: list[tuple[float, float, str]] = field(default_factory=list)  # (sent at, seconds, outcome)
    orders: list[dict[str, Any]] = field(default_factory=list)  # one per accepted order
    paid_fen: int = 0
    refunded_fen: int = 0
    hello: list[float] = field(default_factory=list)  # healthz latencies, seconds
    hello_window: tuple[float, float] = (0.0, 0.0)
    sheds: dict[str, int] = field(default_factory=dict)  # 429/503 answers retried, by path kind and code
    route_ms: dict[str, list[float]] = field(default_factory=dict)  # each answer's time on the wire
    pool_wait_ms: list[float] = field(default_factory=list)  # waits for a free connection
    cpu_s: float = 0.0
    login_s: float = 0.0  # the waiting room: every rider of the process logged in before the start
    first_at: float = 0.0
    last_answer_at: float = 0.0

    def merge(self, other: Tally) -> None:
        self.posts += other.posts
        self.orders += other.orders
        self.paid_fen += other.paid_fen
        self.refunded_fen += other.refunded_fen
        self.hello += other.hello
        if other.hello_window[1]:
            begin = min(self.hello_window[0] or other.hello_window[0], other.hello_window[0])
            self.hello_window = (begin, max(self.hello_window[1], other.hello_window[1]))
        self.cpu_s += other.cpu_s
        self.login_s = max(self.login_s, other.login_s)
        for k, v in other.sheds.items():
            self.sheds[k] = self.sheds.get(k, 0) + v
        for route, times in other.route_ms.items():
            self.route_ms.setdefault(route, []).extend(times)
        self.pool_wait_ms += other.pool_wait_ms
        self.last_answer_at = max(self.last_answer_at, other.last_answer_at)


def _fen(yuan: str) -> int:
    return int(Decimal(yuan) * 100)


def journey(rng: random.Random, n: int) -> tuple[int, int]:
    """Random journeys on a long train: a fifth end to end, most long, some short hops."""
    roll = rng.random()
    if roll < 0.2:
        return 0, n - 1
    if roll < 0.7:
        i = rng.randrange(0, max(1, n // 3))
        return i, rng.randrange(max(i + 1, n - 1 - n // 3), n)
    i = rng.randrange(n - 1)
    return i, rng.randrange(i + 1, min(n, i + 1 + max(1, n // 4)))


def _route(method: str, path: str) -> str:
    """``GET orders/{id}`` for ``GET /api/v1/orders/01a2…?x=y``: the route without ids or query."""
    parts = path.split("?")[0].split("/")[3:]
    return f"{method} " + "/".join("{id}" if len(p) > 16 else p for p in parts)


class Passenger:
    """One member of the crowd playing the sale."""

    def __init__(
        self, rider: Rider, plan: Plan, pool: ClientPool, tally: Tally, counts: Any, rng: random.Random
    ):
        self.rider, self.plan, self.pool, self.tally, self.counts = rider, plan, pool, tally, counts
        self.rng = rng
        self.token: str | None = None

    def bump(self, name: str, by: int = 1) -> None:
        self.counts[C[name]] += by

    async def call(
        self, method: str, path: str, body: Any = None, headers: str = ""
    ) -> tuple[Answer, float, float]:
        """A request retried after ``Retry-After`` while the server sheds load: answer, seconds, sent at."""
        for _ in range(200):
            sent = time.time()
            try:
                answer, took = await self.pool.request(method, path, body, self.token, headers)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                self.bump("errors")
                await asyncio.sleep(0.5)
                continue
            route = _route(method, path)
            self.tally.route_ms.setdefault(route, []).append(took * 1000)
            if answer.status not in (429, 503):
                return answer, took, sent
            self.bump("retried")
            kind = f"{route} {answer.status} {answer.error_code()}"
            self.tally.sheds[kind] = self.tally.sheds.get(kind, 0) + 1
            await asyncio.sleep(answer.retry_after or 0.5)
        raise RuntimeError(f"{method} {path}: still shed after 200 tries")

    async def log_in(self) -> None:
        """Log in while waiting for the sale to open."""
        got, _, _ = await self.call(
            "POST", "/api/v1/auth/login", {"mobile": self.rider.mobile, "password": MEMBER_PASSWORD}
        )
        if got.status != 200:
            self.bump("errors")
            return
        self.token = got.json()["access_token"]
        self.bump("logins")

    async def play(self, arrive_at: float) -> None:
        await asyncio.sleep(max(0.0, arrive_at - time.time()))
        if self.token is None:
            return  # the login was refused: counted as an error
        free = list(self.rider.passengers)
        for _ in range(MAX_ATTEMPTS):
            if not free:
                break
            seated = await self.attempt(free)
            del free[:seated]
        self.bump("done")

    async def attempt(self, free: list[int]) -> int:
        """One search and order: how many of ``free`` (from the front) it seated."""
        plan, rng = self.plan, self.rng
        i, j = journey(rng, len(plan.stations))
        seat_class = "first" if "first" in plan.classes and rng.random() < 0.15 else "second"
        started = time.time()
        path = (
            f"/api/v1/trains/search?from={quote(plan.stations[i])}&to={quote(plan.stations[j])}"
            f"&date={plan.date}"
        )
        found, _, _ = await self.call("GET", path)
        self.bump("searches")
        n = min(len(free), rng.choices((1, 2, 3, 4, 5), (35, 30, 18, 10, 7))[0])
        trains = [
            r["train_code"]
            for r in (found.json() if found.status == 200 else [])
            if r["seats"].get(seat_class, {}).get("remaining", 0) >= n
        ]
        if not trains:
            return 0  # sold out for this journey: the passenger tries another
        riders = [{"passenger_id": p, "seat_class": seat_class} for p in free[:n]]
        if rng.random() < 0.3:
            for r in riders:
                r["seat_pref"] = rng.choice(LETTERS[seat_class])
        body = {
            "date": plan.date,
            "train_code": rng.choice(trains),
            "from": plan.stations[i],
            "to": plan.stations[j],
            "passengers": riders,
        }
        # A retry (shed load, a dropped connection) must not place a second order.
        key = f"Idempotency-Key: {uuid.uuid4()}\r\n"
        answer, took, sent = await self.call("POST", "/api/v1/orders", body, key)
        self.bump("posted")
        self.tally.last_answer_at = max(self.tally.last_answer_at, sent + took)
        if answer.status != 202:
            self.tally.posts.append((sent, took, f"{answer.status} {answer.error_code()}"))
            self.bump("refused")
            return 0
        self.tally.posts.append((sent, took, "202"))
        self.bump("accepted")
        accepted_at = sent + took
        order = answer.json()
        order_id, status = order["order_id"], order["status"]
        polls = 0
        while status not in FINAL:
            await asyncio.sleep(max(0.0, accepted_at + POLL_EVERY_S * (polls + 1) - time.time()))
            polls += 1
            seen, _, _ = await self.call("GET", f"/api/v1/orders/{order_id}")
            if seen.status == 200:
                order = seen.json()
                status = order["status"]
        known_at = time.time()
        self.bump("seen_final")
        record = {
            "order_id": order_id,
            "accepted_at": accepted_at,
            "known_at": known_at,
            "started_at": started,
            "status": status,
            "tickets": 0,
            "passengers": n,
            "polls": polls,
            "post_s": took,
        }
        self.tally.orders.append(record)
        if status != "SUCCESS":
            return 0
        if "tickets" not in order:  # the naive design answers SUCCESS at once: read the tickets
            order = (await self.call("GET", f"/api/v1/orders/{order_id}"))[0].json()
        record["tickets"] = len(order["tickets"])
        self.bump("seen_success")
        self.bump("tickets_seen", record["tickets"])
        await self.after_sale(order, record)
        return n

    async def after_sale(self, order: dict[str, Any], record: dict[str, Any]) -> None:
        """Pay most orders (a tenth of them then refund a ticket), cancel some, leave a few unpaid."""
        roll = self.rng.random()
        order_id = order["order_id"]
        if roll < 0.05:
            got, _, _ = await self.call("POST", f"/api/v1/orders/{order_id}/cancel")
            if got.status == 200:
                record["after"] = "cancelled"
                self.bump("cancelled")
            return
        if roll >= 0.9:
            record["after"] = "unpaid"
            return
        # The key makes a repeat (after a dropped connection or shed load) return the first answer
        # instead of NOT_PAYABLE for an order the first attempt paid.
        key = f"Idempotency-Key: {uuid.uuid4()}\r\n"
        got, _, _ = await self.call("POST", f"/api/v1/orders/{order_id}/pay", {"method": "mock"}, key)
        if got.status != 200:
            self.bump("errors")
            return
        record["after"] = "paid"
        self.tally.paid_fen += _fen(got.json()["total"])
        self.bump("paid")
        if self.rng.random() < 0.1:
            ticket = order["tickets"][0]["ticket_id"]
            got, _, _ = await self.call("POST", f"/api/v1/tickets/{ticket}/refund")
            if got.status == 200:
                record["after"] = "refunded"
                self.tally.refunded_fen += _fen(got.json()["refund_amount"])
                self.bump("refunded")


async def _hello(plan: Plan, pool: ClientPool, start: float, seconds: float, tally: Tally) -> None:
    """Every connection asks ``GET /healthz`` back to back for ``seconds``."""
    await asyncio.sleep(max(0.0, start - time.time()))
    end = start + seconds

    async def one() -> None:
        loop = asyncio.get_running_loop()
        client = pool._idle.get_nowait()
        while time.time() < end:
            t0 = loop.time()
            await client.request("GET", "/healthz")
            tally.hello.append(loop.time() - t0)
        pool._idle.put_nowait(client)

    await asyncio.gather(*(one() for _ in range(pool._idle.qsize())))
    tally.hello_window = (start, end)


async def _play(task: str, plan: Plan, gate: Any, options: dict[str, Any], counts: Any) -> Tally:
    tally = Tally()
    pool = ClientPool(plan.nodes, options["connections"])
    await pool.open()
    rng = random.Random(options["seed"])
    riders = [Passenger(r, plan, pool, tally, counts, random.Random(rng.random())) for r in plan.riders]
    if task != "hello":
        begun = time.time()
        await asyncio.gather(*(p.log_in() for p in riders))
        tally.login_s = time.time() - begun
    # Ready: connected, imported and logged in. Every process starts at the same wall-clock time, set
    # once all are ready, so that a slow spawn on a busy machine does not shift one process's crowd.
    start = await asyncio.to_thread(gate.wait_start)
    await asyncio.sleep(max(0.0, start - time.time()))
    cpu0 = time.process_time()
    waits_before = len(pool.waits)
    try:
        if task == "hello":
            await _hello(plan, pool, start, options["seconds"], tally)
        else:
            ramp = options["ramp"]
            await asyncio.gather(*(p.play(start + rng.uniform(0, ramp)) for p in riders))
    finally:
        tally.cpu_s = time.process_time() - cpu0
        tally.pool_wait_ms = [w * 1000 for w in pool.waits[waits_before:]]
        await pool.close()
    tally.first_at = start
    return tally


class Gate:
    """The common start: each process says it is ready, the parent sets the start time for all."""

    def __init__(self, ctx: Any) -> None:
        self.ready = ctx.Semaphore(0)
        self.go = ctx.Event()
        self.start = ctx.Value("d", 0.0)

    def wait_start(self) -> float:
        self.ready.release()
        self.go.wait()
        return float(self.start.value)

    def open(self, procs: int) -> float:
        for _ in range(procs):
            if not self.ready.acquire(timeout=900):  # logging the crowd in comes first
                raise RuntimeError("a load process did not get ready")
        self.start.value = time.time() + 0.3
        self.go.set()
        return float(self.start.value)


def load_process(task: str, plan: Plan, gate: Gate, options: dict[str, Any], counts: Any, out: Any) -> None:
    """Entry point of a load process (spawned): play ``task`` and put the tally on ``out``."""
    try:
        import uvloop

        tally = uvloop.run(_play(task, plan, gate, options, counts))
    except ImportError:  # pragma: no cover - platforms without uvloop
        tally = asyncio.run(_play(task, plan, gate, options, counts))
    out.put(tally)


def spread(
    task: str, plan: Plan, procs: int, options: dict[str, Any], on_tick: Any = None
) -> tuple[Tally, float, list[int]]:
    """Run ``task`` from ``procs`` processes started together; ``on_tick(counters, pids)`` is called
    about twice a second meanwhile. Returns the merged tally, the start time and the load pids."""
    ctx = mp.get_context("spawn")
    counters = ctx.Array("q", procs * len(COUNTERS), lock=False)
    out = ctx.Queue()
    gate = Gate(ctx)
    workers = []
    for k in range(procs):
        view = _Row(counters, k)
        opts = {
            **options,
            "seed": options.get("seed", 1) * 1000 + k,
            "connections": max(1, options["connections"] // procs),
        }
        p = ctx.Process(target=load_process, args=(task, plan.share(k, procs), gate, opts, view, out))
        p.start()
        workers.append(p)
    pids = [p.pid for p in workers if p.pid is not None]
    start = gate.open(procs)
    total, got = Tally(), 0
    while got < procs:
        try:
            total.merge(out.get(timeout=0.5))
            got += 1
        except Exception:  # queue.Empty: nothing yet
            if on_tick is not None:
                on_tick(_sum(counters, procs), pids)
            if all(not p.is_alive() for p in workers) and out.empty():
                raise RuntimeError("a load process died") from None
    for p in workers:
        p.join()
    if on_tick is not None:
        on_tick(_sum(counters, procs), pids)
    total.first_at = start
    return total, start, pids


class _Row:
    """One load process's row of the shared counters (picklable for spawn)."""

    def __init__(self, array: Any, k: int) -> None:
        self.array, self.base = array, k * len(COUNTERS)

    def __getitem__(self, i: int) -> int:
        return int(self.array[self.base + i])

    def __setitem__(self, i: int, value: int) -> None:
        self.array[self.base + i] = value


def _sum(counters: Any, procs: int) -> dict[str, int]:
    n = len(COUNTERS)
    return {name: sum(int(counters[k * n + i]) for k in range(procs)) for i, name in enumerate(COUNTERS)}
