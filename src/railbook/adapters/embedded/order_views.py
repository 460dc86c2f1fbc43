"""The read model's cache in process memory (``OrderViewCache``) for the embedded mode: one process
holds everything, so each operation is atomic (no await inside) and the generations work as in
Redis (see ``booking.view_cache``). Bounded: the oldest entries and generations are dropped first;
a generation is dropped only long after its last change (``max_generations`` changes later)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence

from railbook.services.booking.ports import VIEW_TTL_SECONDS


class MemoryOrderViews:
    """``OrderViewCache`` in a dict with per-entry expiry, and the generations beside it."""

    def __init__(
        self,
        *,
        ttl_seconds: float = VIEW_TTL_SECONDS,
        max_entries: int = 100_000,
        max_generations: int = 500_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl_seconds
        self.max_entries = max_entries
        self.max_generations = max_generations
        self.clock = clock
        self._orders: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._members: OrderedDict[int, dict[str, tuple[float, str]]] = OrderedDict()
        self._generations: OrderedDict[Hashable, int] = OrderedDict()

    def _fresh(self, entry: tuple[float, str] | None) -> str | None:
        return entry[1] if entry is not None and entry[0] > self.clock() else None

    def _unchanged(self, key: Hashable, generation: int) -> bool:
        """False when the key changed since the reader read the database: its value may predate it."""
        return self._generations.get(key, 0) == generation

    async def order(self, order_id: str) -> tuple[str | None, int | None]:
        return self._fresh(self._orders.get(order_id)), self._generations.get(("o", order_id), 0)

    async def keep_order(self, order_id: str, generation: int, view: str) -> None:
        if not self._unchanged(("o", order_id), generation):
            return
        self._orders[order_id] = (self.clock() + self.ttl, view)
        self._orders.move_to_end(order_id)
        while len(self._orders) > self.max_entries:
            self._orders.popitem(last=False)

    async def member_entry(self, member_id: int, name: str) -> tuple[str | None, int | None]:
        entries = self._members.get(member_id)
        value = self._fresh(entries.get(name)) if entries is not None else None
        return value, self._generations.get(("m", member_id), 0)

    async def keep_member_entry(self, member_id: int, name: str, generation: int, value: str) -> None:
        if not self._unchanged(("m", member_id), generation):
            return
        self._members.setdefault(member_id, {})[name] = (self.clock() + self.ttl, value)
        self._members.move_to_end(member_id)
        while len(self._members) > self.max_entries:
            self._members.popitem(last=False)

    async def written(self, views: Sequence[tuple[str, str]], member_ids: Sequence[int]) -> None:
        firsts = [(o, view) for o, view in views if self._generations.get(("o", o), 0) == 0]
        await self.forget([o for o, _ in views], member_ids)
        for order_id, view in firsts:
            await self.keep_order(order_id, 1, view)

    async def forget(self, order_ids: Sequence[str], member_ids: Sequence[int]) -> None:
        keys: list[Hashable] = [("o", o) for o in order_ids] + [("m", m) for m in member_ids]
        for key in keys:
            self._generations[key] = self._generations.get(key, 0) + 1
            self._generations.move_to_end(key)
        while len(self._generations) > self.max_generations:
            self._generations.popitem(last=False)
        for o in order_ids:
            self._orders.pop(o, None)
        for m in member_ids:
            self._members.pop(m, None)
