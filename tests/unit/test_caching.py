"""The generic caching blocks: breaker states, single-flight sharing, hot-cache expiry and bound,
jittered expiry. A hand-moved clock, no sleeps, no I/O."""

from __future__ import annotations

import asyncio
import random

import pytest

from railbook.kit.caching import CircuitBreaker, HotCache, SingleFlight, jittered_ms


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_at_the_threshold_and_skips_calls_for_the_cooldown() -> None:
    clock = Clock()
    breaker = CircuitBreaker(threshold=3, cooldown=2.0, clock=clock)
    for _ in range(2):
        breaker.failure()
    assert breaker.state == "closed" and breaker.allow()
    breaker.failure()
    assert breaker.state == "open" and breaker.trips == 1
    assert not breaker.allow()
    clock.now += 1.9
    assert not breaker.allow()


def test_breaker_half_open_lets_one_probe_through_whose_outcome_decides() -> None:
    clock = Clock()
    breaker = CircuitBreaker(threshold=1, cooldown=2.0, clock=clock)
    breaker.failure()
    clock.now += 2.0
    assert breaker.state == "half-open"
    assert breaker.allow()  # the probe
    assert not breaker.allow()  # everyone else waits for it
    breaker.failure()  # the probe failed: open again, for a whole cool-down
    assert breaker.state == "open" and breaker.trips == 1
    clock.now += 2.0
    assert breaker.allow()
    breaker.success()
    assert breaker.state == "closed" and breaker.allow() and breaker.failures == 0


def test_breaker_replaces_a_probe_that_never_reports() -> None:
    clock = Clock()
    breaker = CircuitBreaker(threshold=1, cooldown=2.0, clock=clock)
    breaker.failure()
    clock.now += 2.0
    assert breaker.allow()
    clock.now += 1.0
    assert not breaker.allow()
    clock.now += 1.0
    assert breaker.allow()  # the first probe is presumed lost (cancelled)


async def test_single_flight_runs_one_load_for_concurrent_callers() -> None:
    flights = SingleFlight()
    calls = 0
    gate = asyncio.Event()

    async def load() -> int:
        nonlocal calls
        calls += 1
        await gate.wait()
        return 7

    waiters = [asyncio.ensure_future(flights.run("k", load)) for _ in range(5)]
    await asyncio.sleep(0)
    assert len(flights) == 1
    gate.set()
    assert await asyncio.gather(*waiters) == [7] * 5
    assert calls == 1 and len(flights) == 0


async def test_single_flight_survives_a_caller_going_away_and_shares_errors() -> None:
    flights = SingleFlight()
    gate = asyncio.Event()

    async def load() -> str:
        await gate.wait()
        return "done"

    leaving = asyncio.ensure_future(flights.run("k", load))
    staying = asyncio.ensure_future(flights.run("k", load))
    await asyncio.sleep(0)
    leaving.cancel()
    gate.set()
    assert await staying == "done"

    async def broken() -> str:
        raise ValueError("no")

    results = await asyncio.gather(flights.run("e", broken), flights.run("e", broken), return_exceptions=True)
    assert all(isinstance(r, ValueError) for r in results)
    assert len(flights) == 0


def test_hot_cache_serves_until_the_ttl_or_an_earlier_expiry_and_keeps_the_last_value() -> None:
    clock = Clock()
    hot = HotCache(ttl=1.0, max_entries=10, clock=clock)
    hot.put("a", 1)
    hot.put("b", 2, expires_at=clock.now + 0.5)
    hot.put("c", 3, expires_at=clock.now + 5.0)  # never past the ttl
    clock.now += 0.6
    assert (hot.get("a"), hot.get("b"), hot.get("c")) == (1, None, 3)
    clock.now += 0.4
    assert hot.get("a") is None and hot.get("c") is None
    assert hot.last("a") == 1 and hot.last("missing") is None
    hot.clear()
    assert hot.last("a") is None


def test_hot_cache_evicts_the_least_recently_used() -> None:
    clock = Clock()
    hot = HotCache(ttl=10.0, max_entries=2, clock=clock)
    hot.put("a", 1)
    hot.put("b", 2)
    assert hot.get("a") == 1  # "a" is now the most recent
    hot.put("c", 3)
    assert hot.last("b") is None and hot.get("a") == 1 and hot.get("c") == 3


@pytest.mark.parametrize("spread", [0.0, 0.2, 0.5])
def test_jittered_expiry_stays_within_the_spread(spread: float) -> None:
    rng = random.Random(4)
    ttls = [jittered_ms(300, spread, rng) for _ in range(500)]
    assert all(300_000 * (1 - spread) - 1 <= t <= 300_000 * (1 + spread) for t in ttls)
    assert (max(ttls) - min(ttls) > 1000) == (spread > 0)
    assert jittered_ms(0, 0.2, rng) == 1
