"""Consumer side of the train-day order streams (Redis Streams with one consumer group).

Invariant: a message is acknowledged only after the orders it carries are committed, so a crash
anywhere before leaves it pending in the group; pending messages idle longer than ``claim_idle_ms``
are claimed back by any live consumer (``XAUTOCLAIM``). Committing is idempotent on the order id,
so a message delivered twice is harmless.

Streams are found through the ``order:streams`` set (booking adds each train-day's stream) and, as
a fallback, a periodic ``SCAN`` for ``*:orders`` stream keys. The group is created at id 0, so
entries appended before it existed are delivered too. One blocking ``XREADGROUP`` reads all known
streams on a single Redis. On a Redis Cluster each stream lives in its train-day's slot and a command
may not span slots, so there is one non-blocking ``XREADGROUP`` per stream, all of them in one
pipeline (one round trip per node), repeated every ``CLUSTER_POLL_S`` while nothing comes, up to the
block time; the streams are found the same way (the set, and ``SCAN`` on every primary).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from redis.exceptions import ResponseError

log = structlog.get_logger(__name__)

STREAMS_SET = "order:streams"
GROUP = "committers"
# On a cluster, how often the streams are read again while nothing comes (a read cannot block there).
CLUSTER_POLL_S = 0.05


@dataclass(frozen=True, slots=True)
class StreamEntry:
    stream: str
    entry_id: str
    fields: dict[bytes, bytes]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def make_blocking_redis(url: str, *, cluster: bool = False) -> Any:
    """A client for blocking reads: no socket timeout shorter than the block (LIBRARIES.md pitfall 1).
    ``cluster``: a ``RedisCluster`` client (``url`` names one node; eight connections per node)."""
    options: dict[str, Any] = {
        "protocol": 2,
        "socket_timeout": None,
        "socket_connect_timeout": 2.0,
        "decode_responses": False,
        "max_connections": 8,
        "driver_info": None,  # no CLIENT SETINFO handshake (see ``bootstrap.make_redis``)
    }
    if cluster:
        from redis.asyncio.cluster import RedisCluster

        return RedisCluster.from_url(url, **options)
    import redis.asyncio as aioredis

    return aioredis.Redis.from_url(url, **options)


class OrderStreamConsumer:
    """One consumer of the group: reads batches, claims orphans, acknowledges."""

    def __init__(
        self,
        redis: Any,
        consumer: str,
        *,
        group: str = GROUP,
        scan_every_s: float = 30.0,
        refresh_every_s: float = 1.0,
    ) -> None:
        self.redis = redis
        self.consumer = consumer
        self.group = group
        self.streams: list[str] = []
        self._known: set[str] = set()
        self._refreshed = 0.0
        self._scanned = 0.0
        self.scan_every_s = scan_every_s
        self.refresh_every_s = refresh_every_s
        self.cluster = hasattr(redis, "nodes_manager")  # a RedisCluster: one read per stream

    async def refresh(self, *, force: bool = False) -> None:
        """Pick up newly registered streams and create the group on each (idempotent)."""
        now = time.monotonic()
        if not force and now - self._refreshed < self.refresh_every_s:
            return
        self._refreshed = now
        names = {_text(n) for n in await self.redis.smembers(STREAMS_SET)}
        if force or now - self._scanned >= self.scan_every_s:
            self._scanned = now
            async for key in self.redis.scan_iter(match="*:orders", count=1000, _type="stream"):
                names.add(_text(key))
        # Forced: (re)create the group on every stream, known or not (Redis may have lost them all).
        for name in sorted(names if force else names - self._known):
            try:
                await self.redis.xgroup_create(name, self.group, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
            if name not in self._known:
                self._known.add(name)
                self.streams.append(name)

    async def read(self, count: int, block_ms: int | None) -> list[StreamEntry]:
        """New messages of every known stream (at most ``count`` per stream), blocking up to ``block_ms``
        (None: not at all)."""
        if not self.streams:
            return []
        if self.cluster:
            return await self._poll_each(count, block_ms)
        try:
            reply = await self.redis.xreadgroup(
                self.group, self.consumer, {s: ">" for s in self.streams}, count=count, block=block_ms
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc) and "UNBLOCKED" not in str(exc):
                raise
            # A stream (or its group) was deleted while we read: forget them and recreate the groups.
            self._known.clear()
            self.streams.clear()
            await self.refresh(force=True)
            return []
        return _entries(reply)

    async def own_pending(self, count: int) -> list[StreamEntry]:
        """Messages already delivered to this consumer name and not acknowledged (after a restart)."""
        if not self.streams:
            return []
        if self.cluster:
            return await self._read_each("0", count)
        try:
            reply = await self.redis.xreadgroup(
                self.group, self.consumer, {s: "0" for s in self.streams}, count=count
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self.refresh(force=True)  # Redis lost the group (data wiped): nothing is ours
            return []
        return _entries(reply)

    async def _poll_each(self, count: int, block_ms: int | None) -> list[StreamEntry]:
        """``read`` on a cluster: the streams read one by one (non-blocking, pipelined), again every
        CLUSTER_POLL_S until something comes or ``block_ms`` has passed."""
        deadline = time.monotonic() + (block_ms or 0) / 1000
        while True:
            entries = await self._read_each(">", count)
            left = deadline - time.monotonic()
            if entries or left <= 0 or not self.streams:
                return entries
            await asyncio.sleep(min(CLUSTER_POLL_S, left))

    async def _read_each(self, start: str, count: int) -> list[StreamEntry]:
        """One ``XREADGROUP`` per stream from ``start``, in one cluster pipeline (a round trip per node)."""
        pipe = self.redis.pipeline(transaction=False)
        for stream in self.streams:
            pipe.xreadgroup(self.group, self.consumer, {stream: start}, count=count)
        replies = await pipe.execute(raise_on_error=False)
        out: list[StreamEntry] = []
        for reply in replies:
            if isinstance(reply, Exception):
                if "NOGROUP" not in str(reply):
                    raise reply
                # A stream (or its group) was deleted, or Redis lost them: recreate the groups.
                self._known.clear()
                self.streams.clear()
                await self.refresh(force=True)
                return []
            out += _entries(reply)
        return out

    async def claim(self, min_idle_ms: int, count: int) -> list[StreamEntry]:
        """Messages of dead (or stuck) consumers, idle longer than ``min_idle_ms``, now ours."""
        out: list[StreamEntry] = []
        for stream in self.streams:
            start = "0-0"
            while True:
                reply = await self.redis.xautoclaim(
                    stream, self.group, self.consumer, min_idle_ms, start_id=start, count=count
                )
                start = _text(reply[0])
                for entry_id, fields in reply[1]:
                    if fields is not None:
                        out.append(StreamEntry(stream, _text(entry_id), dict(fields)))
                deleted = reply[2] if len(reply) > 2 else []
                if deleted:
                    log.warning("order_stream_deleted_entries", stream=stream, n=len(deleted))
                if start == "0-0" or len(out) >= count:
                    break
            if len(out) >= count:
                break
        return out

    async def claim_from_gone(self, gone_after_ms: int, count: int) -> list[StreamEntry]:
        """Pending messages of consumers silent for ``gone_after_ms`` (a killed process), now ours.

        A live consumer reads every ``worker_block_ms``, so a long silence means it is gone (or stuck
        on a store, in which case committing its messages here too is harmless: commits are
        idempotent). This recovers a killed process's messages in seconds instead of waiting for
        each one to reach the claim idle time.
        """
        out: list[StreamEntry] = []
        for stream in self.streams:
            for info in await self.redis.xinfo_consumers(stream, self.group):
                data = {_text(k): v for k, v in info.items()}
                name = _text(data.get("name", b""))
                if name == self.consumer or int(data.get("pending", 0)) == 0:
                    continue
                if int(data.get("idle", 0)) < gone_after_ms:
                    continue
                pending = await self.redis.xpending_range(
                    stream, self.group, min="-", max="+", count=count - len(out), consumername=name
                )
                ids = [p["message_id"] for p in pending]
                if not ids:
                    continue
                claimed = await self.redis.xclaim(
                    stream, self.group, self.consumer, min_idle_time=gone_after_ms, message_ids=ids
                )
                for entry_id, fields in claimed:
                    if fields:
                        out.append(StreamEntry(stream, _text(entry_id), dict(fields)))
                log.info("order_stream_claimed_from_gone", stream=stream, consumer=name, n=len(claimed))
                if len(out) >= count:
                    return out
        return out

    async def ack(self, entries: Sequence[StreamEntry]) -> None:
        by_stream: dict[str, list[str]] = {}
        for e in entries:
            by_stream.setdefault(e.stream, []).append(e.entry_id)
        if not by_stream:
            return
        pipe = self.redis.pipeline(transaction=False)
        for stream, ids in by_stream.items():
            pipe.xack(stream, self.group, *ids)
        await pipe.execute()


def _entries(reply: Any) -> list[StreamEntry]:
    out: list[StreamEntry] = []
    for stream, items in reply or []:
        name = _text(stream)
        for entry_id, fields in items:
            if fields:
                out.append(StreamEntry(name, _text(entry_id), dict(fields)))
    return out
