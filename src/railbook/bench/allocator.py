"""``railbook bench allocator``: how fast the Redis allocator seats an order, and what best fit buys.

Prints figures; never asserts them (benchmarks are not tests). The server-side cost comes from
Redis itself: per-call durations from the slow log at threshold 0, kept only for this run's script
and train-day (the slow log and ``INFO commandstats`` are instance-wide, and other clients may be
busy on the same Redis), next to a trivial ``EVALSHA`` of ``return 1`` measured the same way in the
same run, so the ratio says how many "script calls" one allocation is worth on this machine.
``INFO commandstats`` (after ``CONFIG RESETSTAT``) gives the mean and the redis.calls made inside
the script per allocation; those two include whatever else ran on the instance meanwhile.

Two sequential runs are timed: the plain demand (1-3 passengers, no preference) and a realistic
mix (1-5 passengers, about 30 % of orders asking a seat letter per passenger); each sells a fresh
train until random demand no longer fits, and reports median, mean and p99 of its selling calls.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import random
import statistics
import time
import uuid
from typing import Any

from redis.asyncio import Redis
from rich.console import Console
from rich.table import Table

from railbook.adapters.redis.allocator import RedisAllocator, day_tag, order_stream_key
from railbook.domain.errors import SoldOut
from railbook.domain.inventory import DayInventory, Policy
from railbook.domain.seating import (
    SEAT_LETTERS,
    AllocationRequest,
    CarriageSpec,
    PassengerSeatRequest,
    Seat,
    class_seats,
)
from railbook.services.ports import DayLayout

N_STOPS = 30
# 12 second-class carriages of 20 rows x 5 seats = 1,200 seats.
CARRIAGES = tuple(CarriageSpec(c, "second", 20) for c in range(1, 13))
DATE = dt.date(2030, 1, 1)
OWNER_KEY = "railbook:test:owner"
GIVE_UP_AFTER = 500  # consecutive sold-out answers: the train is as full as random demand gets it


def _seats() -> dict[str, list[Seat]]:
    return {"second": class_seats(CARRIAGES, "second")}


def _demand(seed: int) -> Any:
    """Endless uniform random journeys; 70 % one passenger, 20 % two, 10 % three, no preferences."""
    rnd = random.Random(seed)
    while True:
        x = rnd.randrange(N_STOPS - 1)
        y = rnd.randrange(x + 1, N_STOPS)
        k = rnd.choices([1, 2, 3], weights=[7, 2, 1])[0]
        yield AllocationRequest(x, y, tuple(PassengerSeatRequest("second") for _ in range(k)))


def _mixed_demand(seed: int) -> Any:
    """Endless uniform random journeys of 1-5 passengers; about 30 % of orders ask a seat letter
    for each passenger (the letter drawn per passenger), the rest no preference."""
    rnd = random.Random(seed)
    letters = SEAT_LETTERS["second"]
    while True:
        x = rnd.randrange(N_STOPS - 1)
        y = rnd.randrange(x + 1, N_STOPS)
        k = rnd.choices([1, 2, 3, 4, 5], weights=[50, 25, 12, 8, 5])[0]
        lettered = rnd.random() < 0.3
        yield AllocationRequest(
            x,
            y,
            tuple(
                PassengerSeatRequest("second", rnd.choice(letters) if lettered else None) for _ in range(k)
            ),
        )


def _p99(values: list[int]) -> float:
    return statistics.quantiles(values, n=100)[98] if len(values) > 1 else float("nan")


def utilisation(policy: Policy, seed: int) -> tuple[float, int, float]:
    """Passenger-km sold / seat-km offered, selling random demand until it stops fitting; also the
    share of demand turned away (sold out) on the way, which is where best fit shows."""
    rnd = random.Random(seed ^ 0x5EED)
    km = [0]
    for _ in range(N_STOPS - 1):
        km.append(km[-1] + rnd.randint(20, 150))
    day = DayInventory.from_masks(N_STOPS, _seats(), policy=policy)
    sold_pkm, orders, misses, refused, asked = 0, 0, 0, 0, 0
    refused_at = 0.0
    for req in _demand(seed):
        asked += 1
        try:
            day.allocate(req)
        except SoldOut:
            refused += 1
            misses += 1
            if misses >= GIVE_UP_AFTER:
                break
            continue
        misses = 0
        orders += 1
        sold_pkm += len(req.passengers) * (km[req.to_index] - km[req.from_index])
        if orders == 3000:
            refused_at = refused / asked
    return sold_pkm / (1200 * km[-1]), orders, refused_at


# the commands the allocate script may issue (redis.calls per allocation are counted from these)
SCRIPT_COMMANDS = ("getrange", "bitpos", "bitfield", "setrange", "xadd", "hget")


async def _evalsha_stats(r: Redis) -> tuple[int, float]:
    info = await r.info("commandstats")
    st = info.get("cmdstat_evalsha", {})
    return int(st.get("calls", 0)), float(st.get("usec_per_call", 0.0))


async def _inner_calls(r: Redis) -> int:
    info = await r.info("commandstats")
    return sum(int(info.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in SCRIPT_COMMANDS)


async def _durations(r: Redis, sha: str, marker: bytes, limit: int) -> list[int]:
    """Server-side µs of this run's calls of one script, oldest first, from the slow log."""
    log = await r.slowlog_get(limit)
    return [int(e["duration"]) for e in reversed(log) if sha.encode() in _cmd(e)[:60] and marker in _cmd(e)]


async def _bench(redis_url: str, seed: int) -> dict[str, Any]:
    r = Redis.from_url(redis_url)
    out: dict[str, Any] = {}
    # Claim the logical database as test runs do (tests/conftest.py), so that none of them picks
    # it and flushes it while the benchmark runs.
    token = f"bench-{uuid.uuid4().hex[:8]}"
    if not await r.set(OWNER_KEY, token, nx=True, ex=3600):
        await r.aclose()
        raise SystemExit(f"{redis_url} is in use by a test run ({OWNER_KEY} is set): pick another database")
    old_slowlog = await r.config_get("slowlog-*")
    try:
        alloc = RedisAllocator(r)
        layout = DayLayout("BENCH", DATE, N_STOPS, _seats(), {})

        async def fresh() -> None:
            await alloc.drop_day("BENCH", DATE)
            await r.delete(order_stream_key("BENCH", DATE))
            await alloc.load_day(layout, replace=True)

        msg = {"member": "bench"}
        marker = day_tag("BENCH", DATE).encode()

        # 0. redis.calls inside the script per allocation: single passengers, then the demand mix
        for label, reqs in (
            (
                "single",
                [
                    AllocationRequest(r_.from_index, r_.to_index, r_.passengers[:1])
                    for r_ in itertools.islice(_demand(seed + 2), 500)
                ],
            ),
            ("mix", list(itertools.islice(_demand(seed + 3), 500))),
        ):
            await fresh()
            await r.config_resetstat()
            for i, req in enumerate(reqs):
                await alloc.allocate("BENCH", DATE, req, order_id=str(i), message=msg)
            evals = (await _evalsha_stats(r))[0]
            out[f"inner_{label}"] = (await _inner_calls(r)) / len(reqs)
            out[f"foreign_{label}"] = evals - len(reqs)

        # 1. sequential, one call at a time: server-side cost per allocation
        await fresh()
        await r.config_set("slowlog-log-slower-than", 0)
        await r.config_set("slowlog-max-len", 200_000)
        await r.slowlog_reset()
        await r.config_resetstat()
        durations, selling, sizes = await _sell(r, alloc, _demand(seed), msg, marker)
        out["calls"], out["usec_all"] = await _evalsha_stats(r)
        out["logged"] = f"{len(durations):,} of {len(selling):,}"
        ok = [d for d, s in zip(durations, selling, strict=True) if s]
        for label, want in (("one", (1,)), ("group", (2, 3))):
            some = [d for d, s, k in zip(durations, selling, sizes, strict=True) if s and k in want]
            out[f"median_ok_{label}"] = statistics.median(some) if some else float("nan")
        refused = [d for d, s in zip(durations, selling, strict=True) if not s]
        out["orders"] = sum(selling)
        out["median_ok"] = statistics.median(ok) if ok else float("nan")
        out["mean_ok"] = statistics.fmean(ok) if ok else float("nan")
        out["p99_ok"] = _p99(ok)
        out["median_refused"] = statistics.median(refused) if refused else float("nan")
        first_miss = selling.index(False) if False in selling else len(selling)
        out["median_early"] = statistics.median(durations[: min(first_miss, 1000)]) if first_miss else 0

        # 1b. the realistic mix, sequential, sold until random demand no longer fits
        await fresh()
        await r.slowlog_reset()
        await r.config_resetstat()
        durations, selling, _ = await _sell(r, alloc, _mixed_demand(seed + 4), msg, marker)
        mix_calls, out["mix_usec_all"] = await _evalsha_stats(r)
        out["mix_inner"] = (await _inner_calls(r)) / max(mix_calls, 1)
        out["mix_logged"] = f"{len(durations):,} of {len(selling):,}"
        ok = [d for d, s in zip(durations, selling, strict=True) if s]
        out["mix_orders"] = sum(selling)
        out["mix_median_ok"] = statistics.median(ok) if ok else float("nan")
        out["mix_mean_ok"] = statistics.fmean(ok) if ok else float("nan")
        out["mix_p99_ok"] = _p99(ok)

        # 2. trivial EVALSHA in the same run, measured the same way (its key carries the marker)
        trivial = r.register_script("return 1")
        await r.slowlog_reset()
        await r.config_resetstat()
        for _ in range(20_000):
            await trivial(keys=[f"{day_tag('BENCH', DATE)}:trivial"])
        out["trivial_calls"], out["usec_trivial"] = await _evalsha_stats(r)
        out["median_trivial"] = statistics.median(await _durations(r, str(trivial.sha), marker, 200_000))
        threshold = int(old_slowlog.get("slowlog-log-slower-than") or 10000)
        await r.config_set("slowlog-log-slower-than", threshold)
        await r.slowlog_reset()

        # 3. throughput: 32 concurrent tasks on one pool until the train is full
        await fresh()
        demand = _demand(seed + 1)
        done = 0
        calls = 0
        stop = False
        misses = 0
        t_full = 0.0
        done_first: list[int] = []

        async def worker(w: int) -> None:
            nonlocal done, stop, misses
            nonlocal calls, t_full
            while not stop:
                req = next(demand)
                calls += 1
                try:
                    await alloc.allocate("BENCH", DATE, req, order_id=f"t{w}", message=msg)
                    done += 1
                    misses = 0
                except SoldOut:
                    if not t_full:
                        t_full = time.perf_counter()
                        done_first.append(done)
                    misses += 1
                    if misses >= GIVE_UP_AFTER:
                        stop = True

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(32)))
        out["elapsed"] = time.perf_counter() - t0
        out["tp_orders"] = done
        out["tp_calls"] = calls
        out["selling_elapsed"] = t_full - t0
        out["selling_orders"] = done_first[0] if done_first else done
        await alloc.drop_day("BENCH", DATE)
        await r.delete(order_stream_key("BENCH", DATE), f"{day_tag('BENCH', DATE)}:meta")
    finally:
        threshold = int(old_slowlog.get("slowlog-log-slower-than") or 10000)
        await r.config_set("slowlog-log-slower-than", threshold)
        await r.config_set("slowlog-max-len", int(old_slowlog.get("slowlog-max-len") or 128))
        if await r.get(OWNER_KEY) == token.encode():
            await r.delete(OWNER_KEY)
        await r.aclose()
    return out


async def _sell(
    r: Redis, alloc: RedisAllocator, demand: Any, msg: dict[str, str], marker: bytes
) -> tuple[list[int], list[bool], list[int]]:
    """Sell one call at a time until GIVE_UP_AFTER refusals in a row: per call its server µs (slow
    log), whether it sold, and its passengers; the last calls only if the log overflowed."""
    selling: list[bool] = []
    sizes: list[int] = []
    misses = 0
    for i, req in enumerate(demand):
        sizes.append(len(req.passengers))
        try:
            await alloc.allocate("BENCH", DATE, req, order_id=str(i), message=msg)
            selling.append(True)
            misses = 0
        except SoldOut:
            selling.append(False)
            misses += 1
            if misses >= GIVE_UP_AFTER:
                break
    durations = await _durations(r, alloc.allocate_sha, marker, 200_000)
    if len(durations) != len(selling):  # the log overflowed: keep the pairing honest
        durations, selling = durations[-len(selling) :], selling[-len(durations) :]
        sizes = sizes[-len(durations) :]
    return durations, selling, sizes


def _cmd(entry: dict[str, Any]) -> bytes:
    c = entry.get("command", b"")
    return c if isinstance(c, bytes) else str(c).encode()


def run(redis_url: str, *, seed: int = 1) -> None:
    """Run the allocator benchmark against the Redis at ``redis_url`` and print a table."""
    console = Console()
    figures = asyncio.run(_bench(redis_url, seed))
    best, best_orders, best_refused = utilisation("best_fit", seed)
    first, first_orders, first_refused = utilisation("first_fit", seed)
    t = Table(title=f"allocator: {N_STOPS} stops, 1,200 seats, uniform random journeys (seed {seed})")
    t.add_column("figure")
    t.add_column("value", justify="right")
    trivial = figures["median_trivial"]
    t.add_row("orders sold (sequential run)", f"{figures['orders']:,}")
    t.add_row("script calls found in the slow log", figures["logged"])
    t.add_row("allocate: server µs/call, median, selling calls (slowlog)", f"{figures['median_ok']:.0f}")
    t.add_row("allocate: server µs/call, mean, selling calls (slowlog)", f"{figures['mean_ok']:.1f}")
    t.add_row("allocate: server µs/call, p99, selling calls (slowlog)", f"{figures['p99_ok']:.0f}")
    t.add_row(
        "allocate: server µs/call, median, selling calls of one / of 2-3 passengers",
        f"{figures['median_ok_one']:.0f} / {figures['median_ok_group']:.0f}",
    )
    t.add_row("allocate: server µs/call, median, before first sold-out", f"{figures['median_early']:.0f}")
    t.add_row(
        "allocate: server µs/call, median, sold-out answers (slowlog)", f"{figures['median_refused']:.0f}"
    )
    t.add_row("trivial EVALSHA 'return 1': server µs/call, median (slowlog)", f"{trivial:.0f}")
    t.add_row("ratio allocate / trivial, selling (medians)", f"{figures['median_ok'] / trivial:.1f}")
    t.add_row("ratio allocate / trivial, sold-out (medians)", f"{figures['median_refused'] / trivial:.1f}")
    t.add_row(
        "allocate: usec_per_call, all calls incl. sold-out (commandstats, instance-wide)",
        f"{figures['usec_all']:.2f} ({figures['calls']:,} calls)",
    )
    t.add_row("trivial: usec_per_call (commandstats, instance-wide)", f"{figures['usec_trivial']:.2f}")
    t.add_row("realistic mix (1-5 passengers, ~30 % with letters): orders sold", f"{figures['mix_orders']:,}")
    t.add_row("realistic mix: script calls found in the slow log", figures["mix_logged"])
    t.add_row(
        "realistic mix: server µs/call, selling calls, median / mean / p99 (slowlog)",
        f"{figures['mix_median_ok']:.0f} / {figures['mix_mean_ok']:.1f} / {figures['mix_p99_ok']:.0f}",
    )
    t.add_row(
        "realistic mix: usec_per_call, all calls incl. sold-out (commandstats, instance-wide)",
        f"{figures['mix_usec_all']:.2f}",
    )
    t.add_row(
        "realistic mix: redis.calls inside allocate per call (commandstats)", f"{figures['mix_inner']:.2f}"
    )
    for label, what in (("single", "one passenger"), ("mix", "demand mix")):
        foreign = figures[f"foreign_{label}"]
        note = f" ({foreign:,} other scripts ran meanwhile)" if foreign else ""
        t.add_row(
            f"redis.calls inside allocate per order, {what} incl. XADD (commandstats)",
            f"{figures[f'inner_{label}']:.2f}{note}",
        )
    rate = figures["selling_orders"] / figures["selling_elapsed"]
    t.add_row("throughput until the first refusal, 32 tasks one client: orders/s", f"{rate:,.0f}")
    t.add_row(
        "script calls/s over the whole run incl. sold-out answers",
        f"{figures['tp_calls'] / figures['elapsed']:,.0f}",
    )
    t.add_row("utilisation best fit (passenger-km / seat-km)", f"{best:.1%} ({best_orders:,} orders)")
    t.add_row("utilisation first fit", f"{first:.1%} ({first_orders:,} orders)")
    t.add_row(
        "demand refused before the 3,000th sale: best fit / first fit",
        f"{best_refused:.1%} / {first_refused:.1%}",
    )
    console.print(t)
