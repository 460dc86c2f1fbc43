"""Search caches in Redis: the shared Bloom bitmap, cached answers with expiry, and the
cross-process loader lock. Every key lives under ``search:`` so the caches can be flushed
without touching the allocator's keys.

Outages are not handled here: calls raise redis-py's ConnectionError/TimeoutError, ``is_outage``
tells them from Redis's answers, and the search service's circuit breaker decides when to stop asking.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.exceptions import BusyLoadingError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

PREFIX = "search:"
BLOOM_KEY = "bloom"

# Release a loader lock only if we still own it.
# Invariant: a lock taken with SET NX PX by one loader is never deleted by another. Without the
# token check, a loader whose lock had already expired (slow query) would delete the lock of the
# next loader, letting a third one start a duplicate load of the same key.
UNLOCK_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def is_redis_outage(exc: BaseException) -> bool:
    """Errors that mean Redis is unreachable or not answering (redis-py's or the OS's), as opposed
    to Redis answering with an error; a server still loading its data set counts as unreachable."""
    if isinstance(
        exc,
        TimeoutError
        | ConnectionError
        | OSError
        | RedisConnectionError
        | RedisTimeoutError
        | BusyLoadingError,
    ):
        return True
    return isinstance(exc, ResponseError) and str(exc).startswith("LOADING")


class RedisSearchCache:
    """The distributed search cache (one per process, over the process's Redis client)."""

    distributed = True

    def __init__(self, redis: Any, *, prefix: str = PREFIX) -> None:
        self.redis = redis
        self.prefix = prefix
        self._unlock = redis.register_script(UNLOCK_LUA)

    def _key(self, key: str) -> str:
        return self.prefix + key

    async def get(self, key: str) -> bytes | None:
        value: bytes | None = await self.redis.get(self._key(key))
        return value

    async def set(self, key: str, value: bytes, ttl_ms: int) -> None:
        await self.redis.set(self._key(key), value, px=max(1, ttl_ms))

    async def try_lock(self, key: str, token: str, ttl_ms: int) -> bool:
        """Take the loader lock of a key (``SET NX PX``); it expires by itself if its owner dies."""
        return bool(await self.redis.set(self._key("lock:" + key), token, nx=True, px=max(1, ttl_ms)))

    async def unlock(self, key: str, token: str) -> None:
        await self._unlock(keys=[self._key("lock:" + key)], args=[token])

    async def claim(self, name: str, ttl_ms: int) -> bool:
        """True for the one process that may do a periodic job (e.g. rebuild the Bloom bitmap) now."""
        return bool(await self.redis.set(self._key("claim:" + name), b"1", nx=True, px=max(1, ttl_ms)))

    async def bloom_store(self, bits: bytes) -> None:
        """Replace the shared bitmap in one ``SET`` (readers see the old or the new one, never half)."""
        await self.redis.set(self._key(BLOOM_KEY), bytes(bits))

    async def bloom_test(self, groups: Sequence[Sequence[int]]) -> list[bool]:
        """For each group of bit positions, whether all are set: one ``BITFIELD_RO`` round trip.
        A missing bitmap reads as all zeros (every key "absent"); the caller double-checks."""
        flat = [p for group in groups for p in group]
        if not flat:
            return [True for _ in groups]
        args: list[Any] = []
        for p in flat:
            args.extend(("GET", "u1", p))
        values = await self.redis.execute_command("BITFIELD_RO", self._key(BLOOM_KEY), *args)
        answers: list[bool] = []
        at = 0
        for group in groups:
            answers.append(all(int(v) for v in values[at : at + len(group)]))
            at += len(group)
        return answers

    async def ping(self) -> None:
        await self.redis.ping()

    def is_outage(self, exc: BaseException) -> bool:
        """Whether ``exc`` (from this cache or the allocator on the same Redis) means Redis is down."""
        return is_redis_outage(exc)

    async def flush(self) -> int:
        """Drop every search key (cold start); returns how many went."""
        removed = 0
        batch: list[Any] = []
        async for key in self.redis.scan_iter(match=self.prefix + "*", count=500):
            batch.append(key)
            if len(batch) >= 500:
                removed += await self.redis.unlink(*batch)
                batch = []
        if batch:
            removed += await self.redis.unlink(*batch)
        return removed
