"""The order queue as /metrics reports it: accepted orders not yet committed across the train-day
order streams, and when the oldest of them was accepted.

An entry is uncommitted until the committers' group acknowledges it: it is either pending (delivered,
not acknowledged) or not yet delivered (the group's ``lag``, Redis 7). Entry ids are the stream's own
``<milliseconds>-<seq>`` (the allocator appends with ``*``), so the oldest uncommitted entry's id is
its acceptance time: the smallest pending id, else the first entry after the last delivered one.
A few commands per stream, pipelined; read at scrape time only.
"""

from __future__ import annotations

from typing import Any

from railbook.adapters.redis.stream import GROUP, STREAMS_SET


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _ms(entry_id: Any) -> int:
    return int(_text(entry_id).split("-", 1)[0])


async def order_queue_figures(redis: Any, group: str = GROUP) -> tuple[int, float | None]:
    """(uncommitted orders, epoch seconds of the oldest one, or None when there is none)."""
    streams = sorted(_text(n) for n in await redis.smembers(STREAMS_SET))
    if not streams:
        return 0, None
    pipe = redis.pipeline(transaction=False)
    for name in streams:
        pipe.xinfo_groups(name)
    infos = await pipe.execute(raise_on_error=False)
    depth = 0
    follow = redis.pipeline(transaction=False)
    asked: list[str] = []
    for name, info in zip(streams, infos, strict=True):
        if isinstance(info, Exception):  # the stream is gone (deleted with its day): nothing waits
            continue
        mine = next((g for g in info if _text(g.get("name", g.get(b"name", ""))) == group), None)
        if mine is None:  # no committer has read it yet: every entry waits
            follow.xlen(name)
            follow.xrange(name, "-", "+", count=1)
            asked.append("all")
            continue
        pending = int(mine.get("pending", 0) or 0)
        lag = mine.get("lag")
        depth += pending
        if pending:
            follow.xpending(name, group)
            asked.append("pending")
        last = _text(mine.get("last-delivered-id", "0-0"))
        if lag is None:  # Redis cannot tell (entries deleted): count what follows the last delivered
            follow.xrange(name, f"({last}", "+")
            asked.append("after")
        elif int(lag):
            depth += int(lag)
            if not pending:  # else the oldest pending entry is older than any undelivered one
                follow.xrange(name, f"({last}", "+", count=1)
                asked.append("first_after")
    replies = await follow.execute(raise_on_error=False) if asked else []
    candidates: list[int] = []
    it = iter(replies)
    for kind in asked:
        if kind == "all":
            length, first = next(it), next(it)
            if isinstance(length, int):
                depth += length
            if first and not isinstance(first, Exception):
                candidates.append(_ms(first[0][0]))
            continue
        reply = next(it)
        if isinstance(reply, Exception) or not reply:
            continue
        if kind == "pending":
            candidates.append(_ms(reply["min"]))
        elif kind == "after":
            depth += len(reply)
            candidates.append(_ms(reply[0][0]))
        elif kind == "first_after":
            candidates.append(_ms(reply[0][0]))
    return depth, min(candidates) / 1000 if candidates else None
