"""Caching building blocks: a circuit breaker, single-flight loads, a bounded hot cache with expiry,
and jittered expiry times. Generic: they know nothing of what they guard or hold."""

from __future__ import annotations

import asyncio
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

import structlog

log = structlog.get_logger(__name__)
T = TypeVar("T")


def jittered_ms(base_seconds: float, spread: float, rng: random.Random) -> int:
    """A TTL of ``base ± spread·base``, so keys written together do not expire together (avalanche)."""
    return max(1, int(base_seconds * 1000 * (1 + rng.uniform(-spread, spread))))


class CircuitBreaker:
    """Stops calling a failing store for a cool-down instead of piling up timeouts.

    Closed: calls go through; ``threshold`` consecutive failures open it. Open: calls are skipped
    until ``cooldown`` has passed. Half-open: exactly one caller (the probe) goes through; its
    success closes the breaker, its failure opens it again. A probe that never reports (its task
    was cancelled) is replaced after another cool-down, so the breaker cannot stick half-open.
    """

    def __init__(
        self,
        *,
        name: str = "store",
        threshold: int = 5,
        cooldown: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.threshold = threshold
        self.cooldown = cooldown
        self.clock = clock
        self.failures = 0
        self.opened_at: float | None = None
        self.probe_started: float | None = None
        self.trips = 0

    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half-open``."""
        if self.opened_at is None:
            return "closed"
        return "half-open" if self.clock() - self.opened_at >= self.cooldown else "open"

    def allow(self) -> bool:
        """Whether a call may go through now (in half-open, True for the one probe only)."""
        if self.opened_at is None:
            return True
        now = self.clock()
        if now - self.opened_at < self.cooldown:
            return False
        if self.probe_started is not None and now - self.probe_started < self.cooldown:
            return False
        self.probe_started = now
        return True

    def success(self) -> None:
        """The store answered: close."""
        self.failures = 0
        self.opened_at = None
        self.probe_started = None

    def failure(self) -> None:
        """The store did not answer: count it, and open (again) at the threshold or after a probe."""
        self.failures += 1
        if self.opened_at is not None or self.failures >= self.threshold:
            if self.opened_at is None:
                self.trips += 1
                log.warning(f"{self.name}_breaker_open", failures=self.failures)
            self.opened_at = self.clock()
            self.probe_started = None


class SingleFlight:
    """One load per key at a time: concurrent callers of the same key share one task.

    The load runs as its own task and callers await it shielded, so a caller that goes away
    (client disconnect) neither cancels the load for the others nor leaves them hanging.
    """

    def __init__(self) -> None:
        self._tasks: dict[Hashable, asyncio.Task[Any]] = {}

    def __len__(self) -> int:
        return len(self._tasks)

    async def run(self, key: Hashable, loader: Callable[[], Awaitable[T]]) -> T:
        """The result of ``loader``, run once for all callers of ``key`` while it is in flight."""
        task = self._tasks.get(key)
        if task is None:
            task = asyncio.ensure_future(loader())
            self._tasks[key] = task
            task.add_done_callback(lambda t, k=key: self._forget(k, t))  # type: ignore[misc]
        result: T = await asyncio.shield(task)
        return result

    def _forget(self, key: Hashable, task: asyncio.Task[Any]) -> None:
        if self._tasks.get(key) is task:
            del self._tasks[key]
        if not task.cancelled():
            task.exception()  # retrieved here; every waiter still gets it raised


class HotCache:
    """The hottest values in process memory, each served for at most ``ttl`` seconds (bounded LRU).
    An expired entry is no longer served but stays until evicted, so ``last`` can hand it to the
    rebuild of the same key (which may reuse what did not change)."""

    def __init__(self, *, ttl: float, max_entries: int, clock: Callable[[], float]) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self.clock = clock
        self._entries: OrderedDict[Hashable, tuple[float, Any]] = OrderedDict()

    def get(self, key: Hashable) -> Any | None:
        """The value of ``key`` if it has not expired."""
        entry = self._entries.get(key)
        if entry is None or entry[0] <= self.clock():
            return None
        self._entries.move_to_end(key)
        return entry[1]

    def last(self, key: Hashable) -> Any | None:
        """The value last put for ``key``, expired or not."""
        entry = self._entries.get(key)
        return None if entry is None else entry[1]

    def put(self, key: Hashable, value: Any, *, expires_at: float | None = None) -> None:
        """Keep ``value`` for ``ttl`` seconds, or until ``expires_at`` if that comes sooner."""
        until = self.clock() + self.ttl
        self._entries[key] = (until if expires_at is None else min(until, expires_at), value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        """Forget everything."""
        self._entries.clear()
