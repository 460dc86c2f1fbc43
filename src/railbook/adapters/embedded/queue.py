"""The embedded order queue and accept-path protections, in process memory (no Redis).

Everything here lives and dies with the process, like the in-process allocator: after a restart
the allocator is rebuilt from the database, and orders accepted but not yet committed are gone
(the single-node trade-off; the distributed mode keeps them in Redis).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from railbook.domain.errors import DuplicateOrder, SaleBusy, TooManyRequests
from railbook.services.booking.ports import (
    PENDING_RECORD_TTL_SECONDS,
    MarkersUnknown,
)
from railbook.services.ports import IDEMPOTENCY_TTL_SECONDS, KeptKey, kept_claim

QueueItem = tuple[str, dt.date, dict[str, str]]


class OrderQueue:
    """Order messages in arrival order; the allocator's ``on_message`` puts, the committer takes batches."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[QueueItem] = asyncio.Queue()
        self.enqueued = 0
        self.finished = 0
        self.sequence: dict[str, int] = {}

    async def put(self, train_code: str, date: dt.date, message: Mapping[str, str]) -> None:
        self.enqueued += 1
        order_id = message.get("order_id")
        if order_id:
            self.sequence[order_id] = self.enqueued
        self._queue.put_nowait((train_code, date, dict(message)))

    async def take(self, limit: int, wait_s: float) -> list[QueueItem]:
        """Up to ``limit`` messages: waits ``wait_s`` seconds for the first, then takes what is there."""
        try:
            first = await asyncio.wait_for(self._queue.get(), wait_s)
        except TimeoutError:
            return []
        batch = [first]
        while len(batch) < limit and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        return batch

    def done(self, order_ids: Sequence[str]) -> None:
        self.finished += len(order_ids)
        for order_id in order_ids:
            self.sequence.pop(order_id, None)

    def position(self, order_id: str) -> int:
        seq = self.sequence.get(order_id)
        return max(0, seq - self.finished - 1) if seq is not None else 0

    def empty(self) -> bool:
        return self._queue.empty()

    def waiting(self) -> tuple[int, str | None]:
        """Accepted orders not yet committed, and the id of the oldest (None when there is none)."""
        return len(self.sequence), next(iter(self.sequence), None)


@dataclass
class _Expiring:
    value: Any
    expires: float


@dataclass
class MemoryOrderGuard:
    """The OrderGuard of the embedded mode. All methods run on the event loop without awaiting in
    between their checks and writes, so each admission is atomic as the Redis script is."""

    queue: OrderQueue
    member_orders_per_minute: int = 20
    ip_requests_per_second: int = 200
    windows: dict[str, tuple[int, int]] = field(default_factory=dict)
    idempotency: dict[str, _Expiring] = field(default_factory=dict)
    markers: dict[str, _Expiring] = field(default_factory=dict)
    # Train-days whose markers were restored from the database in this process (see ADMIT_LUA).
    trusted_days: set[str] = field(default_factory=set)
    tokens: dict[str, dict[str, float]] = field(default_factory=dict)
    records: OrderedDict[str, _Expiring] = field(default_factory=OrderedDict)
    member_pending: dict[int, dict[str, float]] = field(default_factory=dict)

    def _count(self, key: str, window: int) -> int:
        seen = self.windows.get(key)
        n = seen[1] + 1 if seen is not None and seen[0] == window else 1
        self.windows[key] = (window, n)
        if len(self.windows) > 100_000:
            self.windows.clear()
        return n

    async def check_rates(self, member_id: int, client_ip: str) -> int:
        now = int(time.time())
        orders = self._count(f"m:{member_id}", now // 60)
        if orders > self.member_orders_per_minute:
            raise TooManyRequests("Too many orders; slow down.", retry_after=60 - now % 60)
        if client_ip and self._count(f"ip:{client_ip}", now) > self.ip_requests_per_second:
            raise TooManyRequests("Too many requests from this address.", retry_after=1)
        return orders

    async def claim_idempotency(
        self, member_id: int, key: str, request_hash: str, order_id: str
    ) -> str | None:
        name = f"{member_id}:{key}"
        now = time.monotonic()
        held = self.idempotency.get(name)
        if held is not None and held.expires > now:
            return str(held.value)
        self.idempotency[name] = _Expiring(kept_claim(order_id, request_hash), now + IDEMPOTENCY_TTL_SECONDS)
        return None

    async def idempotency_claim(self, member_id: int, key: str) -> str | None:
        held = self.idempotency.get(f"{member_id}:{key}")
        return str(held.value) if held is not None and held.expires > time.monotonic() else None

    async def drop_idempotency(self, member_id: int, key: str) -> None:
        self.idempotency.pop(f"{member_id}:{key}", None)

    async def _admit(
        self,
        train_code: str,
        date: dt.date,
        member_id: int,
        passenger_ids: Sequence[int],
        order_id: str,
        tokens: int,
        *,
        checked: bool = False,
    ) -> None:
        now = time.monotonic()
        day = f"{train_code}:{date}"
        if not checked and day not in self.trusted_days:
            raise MarkersUnknown()
        names = [f"{day}:{member_id}:{p}" for p in passenger_ids]
        for name in names:
            held = self.markers.get(name)
            if held is not None and held.expires > now:
                raise DuplicateOrder(
                    "One of these passengers already has a pending or unpaid order for this train and date.",
                )
        taken = self.tokens.setdefault(day, {})
        if len(taken) >= tokens:
            raise SaleBusy("This train-day is busy; retry shortly.", retry_after=2)
        taken[order_id] = now
        for name in names:
            self.markers[name] = _Expiring(order_id, now + 24 * 3600)

    async def admit_order(
        self,
        train_code: str,
        date: dt.date,
        member_id: int,
        passenger_ids: Sequence[int],
        order_id: str,
        tokens: int,
        *,
        record: Mapping[str, Any],
        idempotency: tuple[str, str] | None,
        checked: bool = False,
        record_json: str | None = None,
    ) -> str | None:
        """Claim, admission and record with no await in between: atomic on the event loop."""
        if idempotency is not None:
            claim = await self.claim_idempotency(member_id, idempotency[0], idempotency[1], order_id)
            if claim is not None:
                return claim
        try:
            await self._admit(train_code, date, member_id, passenger_ids, order_id, tokens, checked=checked)
        except BaseException:
            if idempotency is not None:
                await self.drop_idempotency(member_id, idempotency[0])
            raise
        await self.remember_pending(record)
        return None

    async def refuse_order(
        self,
        train_code: str,
        date: dt.date,
        member_id: int,
        passenger_ids: Sequence[int],
        order_id: str,
        idempotency_key: str | None,
    ) -> None:
        await self.settle(train_code, date, [(order_id, member_id, passenger_ids)])
        self.records.pop(order_id, None)
        self.member_pending.get(member_id, {}).pop(order_id, None)
        if idempotency_key:
            await self.drop_idempotency(member_id, idempotency_key)

    async def settle(
        self,
        train_code: str,
        date: dt.date | str,
        orders: Sequence[tuple[str, int, Sequence[int]]],
        *,
        keep_markers_seconds: int = 0,
    ) -> None:
        day = f"{train_code}:{date}"
        now = time.monotonic()
        for order_id, member_id, passenger_ids in orders:
            self.tokens.get(day, {}).pop(order_id, None)
            for p in passenger_ids:
                name = f"{day}:{member_id}:{p}"
                held = self.markers.get(name)
                if held is not None and held.value == order_id:
                    if keep_markers_seconds > 0:
                        held.expires = now + keep_markers_seconds
                    else:
                        del self.markers[name]

    async def restore_markers(
        self, train_code: str, date: dt.date, holds: Sequence[tuple[str, int, int]], ttl_seconds: int
    ) -> None:
        now = time.monotonic()
        for order_id, member_id, passenger_id in holds:
            name = f"{train_code}:{date}:{member_id}:{passenger_id}"
            held = self.markers.get(name)
            if held is None or held.expires <= now:
                self.markers[name] = _Expiring(order_id, now + ttl_seconds)

    async def trust_markers(self, train_code: str, date: dt.date) -> None:
        self.trusted_days.add(f"{train_code}:{date}")

    async def marker_holders(
        self, train_code: str, date: dt.date, member_id: int, passenger_ids: Sequence[int]
    ) -> dict[int, str] | None:
        day = f"{train_code}:{date}"
        if day not in self.trusted_days:
            return None
        now = time.monotonic()
        holders: dict[int, str] = {}
        for p in passenger_ids:
            held = self.markers.get(f"{day}:{member_id}:{p}")
            if held is not None and held.expires > now:
                holders[p] = str(held.value)
        return holders

    async def lookup(
        self, member_id: int, passenger_ids: Sequence[int], train_code: str, date: dt.date
    ) -> tuple[dict[int, str] | None, str, bool]:
        """No shared passenger cache here (the database is in process): names always come from it."""
        return None, "", f"{train_code}:{date}" in self.trusted_days

    async def passengers_generation(self, member_id: int) -> str:
        return ""

    async def cache_passengers(
        self, member_id: int, generation: str, names: Mapping[int, str], keys: Sequence[KeptKey] = ()
    ) -> None:
        """Nothing to fill: with no shared passenger cache a keyed order always reads the database."""
        return None

    async def forget_passengers(self, member_id: int) -> None:
        return None

    async def remember_pending(self, record: Mapping[str, Any]) -> None:
        order_id = str(record["order_id"])
        self.records[order_id] = _Expiring(dict(record), time.monotonic() + PENDING_RECORD_TTL_SECONDS)
        self.member_pending.setdefault(int(record["member_id"]), {})[order_id] = time.time()
        while len(self.records) > 200_000:
            self.records.popitem(last=False)

    async def pending(self, order_id: str) -> dict[str, Any] | None:
        held = self.records.get(order_id)
        if held is None or held.expires < time.monotonic():
            return None
        return dict(held.value)

    async def pending_of_member(self, member_id: int) -> list[dict[str, Any]]:
        ids = sorted(self.member_pending.get(member_id, {}).items(), key=lambda kv: kv[1], reverse=True)
        out = []
        for order_id, _ in ids[:200]:
            record = await self.pending(order_id)
            if record is not None:
                out.append(record)
        return out

    async def forget_pending(self, orders: Sequence[tuple[str, int]]) -> None:
        for order_id, member_id in orders:
            self.member_pending.get(member_id, {}).pop(order_id, None)
            held = self.records.get(order_id)
            if held is not None:
                held.expires = min(held.expires, time.monotonic() + 600)

    async def queue_position(self, record: Mapping[str, Any]) -> int:
        return self.queue.position(str(record["order_id"]))

    async def drained_past(self, record: Mapping[str, Any], margin_seconds: float) -> bool:
        # In process, an admitted order is queued in the same step; only the process's end loses it
        # (and the pending record with it).
        return False
