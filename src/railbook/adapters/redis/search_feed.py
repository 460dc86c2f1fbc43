"""Train-days changed, announced to every search process over Redis pub/sub (``SearchChangeFeed``).

Why pub/sub rather than a generation counter read beside the counts: a search answered from a
process's own memory (its hot answer, its count snapshot less than ``hot_seconds`` old) asks Redis
nothing, and that is what keeps a flash crowd's searches cheap. A generation counter only helps when
it is read, which is on every search (a round trip per hot hit) or only when a snapshot is re-read
(then it adds nothing: the allocator's counts are already current). Pub/sub costs the hot path
nothing: each process listens on one connection of its own and drops the snapshots of the days
named; the committer pays one PUBLISH per batch, after its commit.

Exactness: PUBLISH returns once Redis has written the message to every subscriber's connection, and
the committer publishes before the orders read as final (``booking.commit.settle``), so the message
is on its way to every API process before any client can learn of the commit; the listener drops
the snapshots as soon as its loop reads it. A message missed while the connection was down is made
up for on resubscribing: the listener is told to forget everything (``lost``), and until then the
snapshots' own bound (``hot_seconds``) still holds.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import secrets
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from railbook.adapters.redis.cache import is_redis_outage

log = structlog.get_logger(__name__)

CHANNEL = "search:days-changed"
# How long one wait for a message lasts: well under the client's socket timeout.
POLL_SECONDS = 1.0
RETRY_SECONDS = 0.5


class RedisSearchFeed:
    """Announcements of changed train-days on one Redis channel; each process skips its own."""

    def __init__(self, redis: Any, *, channel: str = CHANNEL) -> None:
        self.redis = redis
        self.channel = channel
        self.sender = secrets.token_hex(6)

    async def publish(self, days: Sequence[tuple[str, dt.date]]) -> None:
        if not days:
            return
        body = json.dumps({"from": self.sender, "days": [[code, date.isoformat()] for code, date in days]})
        await self.redis.publish(self.channel, body)

    async def listen(
        self,
        changed: Callable[[list[tuple[str, dt.date]]], None],
        lost: Callable[[], None],
    ) -> None:
        first = True
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                if not first:
                    lost()  # announcements made while we were away are gone: forget everything
                first = False
                while True:
                    message = await pubsub.get_message(timeout=POLL_SECONDS)
                    if message is not None and message.get("type") == "message":
                        days = self._days(message["data"])
                        if days:
                            changed(days)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not is_redis_outage(exc):
                    log.error("search_feed_failed", error=repr(exc)[:300])
                first = False
                await asyncio.sleep(RETRY_SECONDS)
            finally:
                try:
                    await pubsub.aclose()
                except Exception as exc:  # the connection is gone already
                    log.debug("search_feed_close_failed", error=repr(exc)[:200])

    def _days(self, data: bytes | str) -> list[tuple[str, dt.date]]:
        """The train-days of another process's announcement ([] for our own or a malformed one)."""
        try:
            body = json.loads(data)
            if body.get("from") == self.sender:
                return []
            return [(str(code), dt.date.fromisoformat(str(date))) for code, date in body["days"]]
        except (ValueError, TypeError, KeyError, AttributeError):
            log.warning("search_feed_bad_message", data=repr(data)[:200])
            return []
