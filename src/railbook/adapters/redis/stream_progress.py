"""Where the committers are in a train-day's order stream, for a queued order's record: how many
orders are ahead of it, and whether they have drained past it. Stream ids are millisecond times, as
are the orders' acceptance times (uuid7 ids), so the two compare."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping
from typing import Any


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value) if value is not None else ""


def _ms(entry_id: Any) -> int:
    return int((_text(entry_id) or "0-0").split("-")[0])


def _accepted_ms(record: Mapping[str, Any]) -> float:
    return dt.datetime.fromisoformat(str(record["created_at"])).timestamp() * 1000


async def _group(redis: Any, stream: str, group: str) -> dict[Any, Any] | None:
    """The consumer group's entry of ``XINFO GROUPS`` (None: not created yet); raises when Redis does."""
    groups = await redis.xinfo_groups(stream)
    return next((g for g in groups if _text(g.get("name")) == group), None)


async def queue_position(batch: Any, group: str, stream: str, record: Mapping[str, Any]) -> int:
    """Approximate count of stream entries ahead of this order not yet read by the committers: the
    group's undelivered entries (lag), scaled by where the order's time falls between the last
    delivered entry and the newest one. One round trip on ``batch`` (the auto-pipeline): a waiting
    passenger asks every second."""
    try:
        groups, newest, length = await batch.execute(
            [("XINFO", "GROUPS", stream), ("XREVRANGE", stream, "+", "-", "COUNT", 1), ("XLEN", stream)]
        )
    except Exception:
        return 0
    if isinstance(groups, Exception):  # no stream yet
        return 0
    info = next((g for g in map(_pairs, groups) if _text(g.get("name")) == group), None)
    if info is None:
        return int(length)
    last_ms = _ms(info.get("last-delivered-id"))
    lag = info.get("lag")
    created_ms = int(_accepted_ms(record))
    if created_ms < last_ms or not newest:
        return 0
    newest_ms = _ms(newest[0][0])
    behind = int(lag) if lag is not None else 0
    if newest_ms <= last_ms:
        return behind
    share = min(1.0, (created_ms - last_ms) / (newest_ms - last_ms))
    return max(1, round(behind * share)) if behind else 0


def _pairs(flat: list[Any]) -> dict[str, Any]:
    """A raw ``XINFO`` entry (name, value, name, value, ...) as a dict by name."""
    return {_text(flat[k]): flat[k + 1] for k in range(0, len(flat) - 1, 2)}


async def drained_past(
    redis: Any, group: str, stream: str, record: Mapping[str, Any], margin_seconds: float
) -> bool:
    """Every entry of the stream up to the cutoff (the order's acceptance plus the margin) has been
    delivered to the committers (the group's last delivered id is past it, or nothing is
    undelivered) and acknowledged (no entry up to it is pending): an entry is acknowledged only once
    its order is in the system of record. False when that cannot be told."""
    cutoff_ms = _accepted_ms(record) + margin_seconds * 1000
    if cutoff_ms > time.time() * 1000:
        return False
    try:
        info = await _group(redis, stream, group)
        summary = await redis.xpending(stream, group)
    except Exception:
        return False
    if info is None:
        return False
    if _ms(info.get("last-delivered-id")) < cutoff_ms and info.get("lag") != 0:
        return False
    oldest = summary.get("min") if summary and summary.get("pending") else None
    return oldest is None or _ms(oldest) > cutoff_ms
