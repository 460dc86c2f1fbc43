"""The scheduler role: keeps the sale window open, the allocator holding every open day, and the
allocator reconciled with the system of record.

The window is counted in Beijing days (``kit.clock``): a round runs as the Beijing day changes
(midnight in Beijing, 16:00 UTC), so the new last day of the window opens then, not up to a round
later, and the day gone by stops being loaded.

Every step is idempotent (opening a day twice changes nothing; loading a loaded day is a no-op;
reconciling only marks held what the database holds), so several instances are safe; the leader lock
only keeps them from doing the same work twice.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import socket
import time
import uuid
from typing import Any

import structlog

from railbook.kit.clock import beijing_today, next_beijing_midnight, utcnow
from railbook.services.sales.loading import load_open_days, open_days
from railbook.services.sales.opening import open_window
from railbook.services.sales.reconcile import reconcile_day

log = structlog.get_logger(__name__)

LEADER_KEY = "railbook:leader"
LEADER_TTL_MS = 30_000
RENEW_EVERY_S = 10.0
TICK_EVERY_S = 60.0
RECONCILE_EVERY_S = 30.0
# Besides every day loaded again since its last reconciliation, each round reconciles this share of
# the others, so a full pass over the open days takes SWEEP_ROUNDS rounds.
SWEEP_ROUNDS = 10


class LeaderLock:
    """Leadership of the scheduler role, held in Redis.

    Invariant: at most one token owns ``railbook:leader`` at a time, and only its owner extends
    it. The key is taken with ``SET NX PX`` and renewed (every RENEW_EVERY_S, well inside the TTL)
    in a WATCH/MULTI transaction that extends it only while it still holds our token; if the
    owner dies the key expires after LEADER_TTL_MS and another instance takes over. A lost race
    costs nothing but a skipped round, since every round is idempotent.
    """

    def __init__(self, redis: Any, *, key: str = LEADER_KEY, ttl_ms: int = LEADER_TTL_MS) -> None:
        self.redis = redis
        self.key = key
        self.ttl_ms = ttl_ms
        self.token = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}".encode()

    async def hold(self) -> bool:
        """Take or renew leadership; True while we are the leader."""
        if await self.redis.set(self.key, self.token, nx=True, px=self.ttl_ms):
            return True
        async with self.redis.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(self.key)
                if await pipe.get(self.key) != self.token:
                    await pipe.unwatch()
                    return False
                pipe.multi()
                pipe.pexpire(self.key, self.ttl_ms)
                await pipe.execute()
                return True
            except Exception as exc:
                from redis.exceptions import WatchError

                if isinstance(exc, WatchError):  # it changed hands between GET and EXEC
                    return False
                raise

    async def release(self) -> None:
        """Give leadership up at shutdown if we still hold it (best effort: it expires anyway)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(self.key)
                if await pipe.get(self.key) == self.token:
                    pipe.multi()
                    pipe.delete(self.key)
                    await pipe.execute()
                else:
                    await pipe.unwatch()
            except Exception:
                log.warning("leader_release_failed", key=self.key)


async def scheduler_tick(container: Any, *, today: dt.date | None = None) -> dict[str, int]:
    """One round: open every day of the sale window that begins ``today`` (default: today in Beijing),
    then make sure the allocator holds every open day from then on."""
    today = today or beijing_today()
    opened = await open_window(container, today=today)
    loaded = await load_open_days(container, today=today)
    return {"opened": len(opened["opened"]), "loaded": loaded}


def pause_before_next_round(interval: float, now: dt.datetime) -> float:
    """Seconds to wait at ``now``: ``interval``, or less so as to wake as the next Beijing day begins."""
    return min(interval, (next_beijing_midnight(now) - now).total_seconds())


class Reconciler:
    """Reconciliation rounds over the open train-days (``sales.reconcile_day``).

    Drift between the allocator and the system of record comes from a day being loaded again (a wipe
    or a rebuild racing a commit), so a day whose load epoch changed since its last reconciliation is
    reconciled at once; the rest are swept a slice per round, against drift of any other origin. A day
    left with drift it could not safely free (orders or releases still on their way) is looked at again
    the next round, so a drained day converges.
    """

    def __init__(self) -> None:
        self.seen: dict[tuple[str, dt.date], str] = {}
        self.drifting: set[tuple[str, dt.date]] = set()  # drift left alone last time: looked at again
        self.round = 0

    async def run(self, container: Any) -> dict[str, int]:
        days = await open_days(container)
        epochs = await container.allocator.epochs(days) if days else []
        self.round += 1
        due = {
            day: epoch
            for k, (day, epoch) in enumerate(zip(days, epochs, strict=True))
            if epoch is not None
            and (
                self.seen.get(day) != epoch
                or day in self.drifting
                or k % SWEEP_ROUNDS == self.round % SWEEP_ROUNDS
            )
        }
        repaired = 0
        for (code, date), epoch in due.items():
            result = await reconcile_day(container, code, date)
            repaired += result.repaired_seats
            self.seen[(code, date)] = epoch
            if result.unconfirmed:
                self.drifting.add((code, date))
            else:
                self.drifting.discard((code, date))
        live = set(days)
        self.seen = {d: e for d, e in self.seen.items() if d in live}
        self.drifting &= live
        return {"reconciled": len(due), "repaired_seats": repaired}


async def run_scheduler(container: Any) -> None:
    """Loop forever: a round at once, then every TICK_EVERY_S and as each Beijing day begins, while this
    instance leads."""
    lock = LeaderLock(container.redis) if container.redis is not None else None
    last_tick: float | None = None
    ticked_day: dt.date | None = None
    last_reconcile: float | None = None
    reconciler = Reconciler()
    leading = False
    try:
        while True:
            try:
                now_leading = True if lock is None else await lock.hold()
                if now_leading != leading:
                    log.info("scheduler_leadership", leading=now_leading)
                    leading = now_leading
                    last_tick = None if leading else last_tick
                today = beijing_today()
                if leading and (
                    last_tick is None or today != ticked_day or time.monotonic() - last_tick >= TICK_EVERY_S
                ):
                    result = await scheduler_tick(container, today=today)
                    last_tick, ticked_day = time.monotonic(), today
                    if result["opened"] or result["loaded"]:
                        log.info("scheduler_round", **result)
                if leading and (
                    last_reconcile is None or time.monotonic() - last_reconcile >= RECONCILE_EVERY_S
                ):
                    last_reconcile = time.monotonic()
                    done = await reconciler.run(container)
                    if done["repaired_seats"]:
                        log.warning("scheduler_reconciled", **done)
            except asyncio.CancelledError:
                raise
            except Exception:
                # A store restarting must not end the role: log and try again next round.
                log.exception("scheduler_round_failed")
            interval = RENEW_EVERY_S if lock is not None else RECONCILE_EVERY_S
            await asyncio.sleep(pause_before_next_round(interval, utcnow()))
    finally:
        if lock is not None:
            await asyncio.shield(lock.release())
