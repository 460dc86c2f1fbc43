"""Calls to the shared store (Redis) that degrade instead of failing: a circuit breaker, a time
limit and a bound on calls in flight; a call skipped or failed for an outage answers SKIPPED and
the caller falls back to the system of record."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TypeVar

from railbook.kit.caching import CircuitBreaker
from railbook.services.search.ports import SearchCache

T = TypeVar("T")


class Skipped:
    """A guarded call that did not happen (breaker open) or failed (outage)."""


SKIPPED = Skipped()


class SharedStoreGuard:
    """Runs calls to the shared store through one breaker; the cache adapter says which errors are
    outages. In the embedded mode nothing is shared, so calls run unguarded."""

    def __init__(
        self,
        cache: SearchCache,
        breaker: CircuitBreaker,
        stats: MutableMapping[str, int],
        *,
        timeout: float,
        concurrency: int,
    ) -> None:
        self.cache = cache
        self.breaker = breaker
        self.stats = stats
        self.timeout = timeout
        self._slots = asyncio.Semaphore(concurrency)

    async def call(self, call: Callable[[], Awaitable[T]]) -> T | Skipped:
        """Run a Redis call through the breaker with a time limit; SKIPPED when Redis is down."""
        if not self.cache.distributed:
            return await call()
        if not self.breaker.allow():
            self.stats["redis_skipped"] += 1
            return SKIPPED
        try:
            async with self._slots:
                async with asyncio.timeout(self.timeout):
                    result = await call()
        except Exception as exc:
            if not self.cache.is_outage(exc):
                self.breaker.success()  # Redis answered (e.g. "day not loaded"): it is reachable
                raise
            self.breaker.failure()
            self.stats["redis_failures"] += 1
            return SKIPPED
        self.breaker.success()
        return result

    def is_outage(self, exc: BaseException) -> bool:
        """Whether ``exc`` means the shared store is unreachable (the cache adapter's classification)."""
        return self.cache.is_outage(exc)

    @property
    def closed(self) -> bool:
        """Whether the breaker lets every call through."""
        return self.breaker.state == "closed"
