"""The events stream in Redis: the outbox relay appends to ``railbook:events`` and consumer groups
read, acknowledge and take over each other's stale entries. Delivery is at least once: an entry read
and not acknowledged is read again (by XAUTOCLAIM), so a consumer records what it handled."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import chain
from typing import Any

from redis.exceptions import ResponseError

from railbook.adapters.redis.autopipe import AutoPipeline, raise_errors

STREAM = "railbook:events"
STREAM_MAXLEN = 100_000

StreamEntry = tuple[Any, dict[str, str]]  # the entry id as Redis gave it, and its decoded fields


def _decode(fields: Mapping[Any, Any]) -> dict[str, str]:
    return {
        (k.decode() if isinstance(k, bytes) else str(k)): (v.decode() if isinstance(v, bytes) else str(v))
        for k, v in fields.items()
    }


def group_lost(exc: Exception) -> bool:
    """The stream or its group vanished (Redis data lost or flushed): the caller recreates them."""
    text = str(exc)
    return "NOGROUP" in text or "UNBLOCKED" in text


class RedisEventStream:
    """Appends go through the process's shared auto-pipeline (they batch with the accept path's calls);
    group reads use the plain client."""

    def __init__(self, redis: Any, autopipe: AutoPipeline) -> None:
        self.redis = redis
        self.autopipe = autopipe

    async def publish(self, events: Sequence[Mapping[str, str]]) -> None:
        """Append these events, in order, trimming the stream to about STREAM_MAXLEN entries."""
        head = ("XADD", STREAM, "MAXLEN", "~", STREAM_MAXLEN, "*")
        commands = [(*head, *chain.from_iterable(event.items())) for event in events]
        raise_errors(await self.autopipe.execute(commands))

    async def ensure_group(self, group: str) -> None:
        """Create the stream and the consumer group if either is missing."""
        try:
            await self.redis.xgroup_create(STREAM, group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def read(self, group: str, consumer: str, *, count: int, block_ms: int) -> list[StreamEntry]:
        """Up to ``count`` entries never delivered to the group, waiting up to ``block_ms`` for one."""
        answer = await self.redis.xreadgroup(group, consumer, {STREAM: ">"}, count=count, block=block_ms)
        return [(i, _decode(f)) for _stream, entries in answer or [] for i, f in entries or []]

    async def claim_stale(
        self, group: str, consumer: str, *, min_idle_ms: int, count: int
    ) -> list[StreamEntry]:
        """Take over up to ``count`` entries another consumer read over ``min_idle_ms`` ago and never
        acknowledged (XAUTOCLAIM); entries deleted since (no fields) are left out."""
        answer = await self.redis.xautoclaim(
            STREAM, group, consumer, min_idle_time=min_idle_ms, start_id="0-0", count=count
        )
        return [(i, _decode(f)) for i, f in (answer[1] if answer and len(answer) > 1 else []) if f]

    async def ack(self, group: str, entry_ids: Sequence[Any]) -> None:
        """Acknowledge handled entries: the group will not deliver them again."""
        await self.redis.xack(STREAM, group, *entry_ids)
