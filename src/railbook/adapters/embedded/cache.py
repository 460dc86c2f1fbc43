"""In-process search caches for the embedded mode: the same interface as the Redis one.

One process holds everything, so the loader lock is the service's in-process single flight
and always granted here; entries expire by the injected clock and the dict is bounded.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

from railbook.domain.bloom import bit_is_set


class InProcessSearchCache:
    """A bounded dict with per-entry expiry, plus the Bloom bitmap as a bytearray."""

    distributed = False

    def __init__(self, *, max_entries: int = 50_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = max_entries
        self.clock = clock
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._claims: dict[str, float] = {}
        self._bloom = b""

    async def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if expires <= self.clock():
            self._entries.pop(key, None)
            return None
        return value

    async def set(self, key: str, value: bytes, ttl_ms: int) -> None:
        self._entries[key] = (self.clock() + max(1, ttl_ms) / 1000, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    async def try_lock(self, key: str, token: str, ttl_ms: int) -> bool:
        return True

    async def unlock(self, key: str, token: str) -> None:
        return None

    async def claim(self, name: str, ttl_ms: int) -> bool:
        now = self.clock()
        if self._claims.get(name, 0.0) > now:
            return False
        self._claims[name] = now + ttl_ms / 1000
        return True

    async def bloom_store(self, bits: bytes) -> None:
        self._bloom = bytes(bits)

    async def bloom_test(self, groups: Sequence[Sequence[int]]) -> list[bool]:
        return [all(bit_is_set(self._bloom, p) for p in group) for group in groups]

    async def ping(self) -> None:
        return None

    def is_outage(self, exc: BaseException) -> bool:
        """Whether ``exc`` is a time-out or a connection failure (nothing shared here can go away)."""
        return isinstance(exc, TimeoutError | ConnectionError | OSError)

    async def flush(self) -> int:
        n = len(self._entries)
        self._entries.clear()
        self._claims.clear()
        return n
