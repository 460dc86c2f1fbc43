"""``railbook worker`` and ``railbook scheduler`` stop cleanly on SIGTERM, as processes of their own on
PostgreSQL + Redis under a crowd of HTTP clients (``tests/crowd.py``) ordering through ``railbook api``.

The committer is stopped while the train-day's stream holds orders it has not read: it commits and
acknowledges the batch it holds, exits 0 within seconds, and leaves the rest in the stream, where a
second ``railbook worker`` commits it. Afterwards the crowd audit: every 202 order final and in the
database, no seat segment sold twice, the allocator equal to the database, no 500."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from railbook.adapters.redis.allocator import order_stream_key
from railbook.adapters.redis.stream import GROUP
from tests.cluster.test_cluster_nodes import Committer, committed, drained
from tests.conftest import claimed_redis_db, fresh_pg_database
from tests.crowd import (
    FINAL,
    Tally,
    assert_clean,
    audit_day,
    crowd_client,
    hot_day,
    recorded,
    report,
    server_env,
    settle_orders,
    shop,
)
from tests.integration.test_faults import ServeProcess
from tests.live_server import log_tail
from tests.support import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

ROWS = 12  # one second-class carriage: 60 seats
STOPS = 5
SHOPPERS = 30
BATCH = 5  # small batches: the stream holds several the committer has not read when it is stopped
GRACE_S = 60  # SHUTDOWN_GRACE_SECONDS: how long a stop may wait for the committer before cancelling it
STOPPED_WITHIN_S = 20.0  # well inside the grace: a drained stop, not one that waited the grace out


@pytest.fixture
def env() -> Iterator[dict[str, str]]:
    """A fresh database and a Redis logical database of this test's own, as server settings."""
    with fresh_pg_database() as pg, claimed_redis_db(4) as redis_url:
        yield server_env(
            pg, redis_url, RAILBOOK_WORKER_BATCH_SIZE=str(BATCH), RAILBOOK_SHUTDOWN_GRACE_SECONDS=str(GRACE_S)
        )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def group_of(redis: Any, stream: str) -> dict[str, Any]:
    """The committers' consumer group on the stream: pending, lag, last delivered entry."""
    return next(g for g in await redis.xinfo_groups(stream) if _text(g["name"]) == GROUP)


async def pending_of(redis: Any, stream: str, consumer: str) -> int:
    """Entries delivered to ``consumer`` and not acknowledged."""
    consumers = {_text(c["name"]): c for c in await redis.xinfo_consumers(stream, GROUP)}
    return int(consumers[consumer]["pending"]) if consumer in consumers else 0


def resume(process: ServeProcess) -> None:
    """SIGCONT to a process that may still be paused (so that it can stop)."""
    if process.proc is not None and process.proc.returncode is None:
        os.kill(process.proc.pid, signal.SIGCONT)


async def sigterm(process: ServeProcess) -> tuple[int, float]:
    """SIGTERM (and SIGCONT, should it be paused); its exit status and the seconds it took to exit."""
    assert process.proc is not None
    started = time.monotonic()
    process.proc.send_signal(signal.SIGTERM)
    os.kill(process.proc.pid, signal.SIGCONT)
    try:
        code = await asyncio.wait_for(process.proc.wait(), timeout=GRACE_S + 30)
    except TimeoutError:
        await process.kill()
        raise AssertionError(f"no exit {GRACE_S + 30} s after SIGTERM:\n{log_tail(process.log)}") from None
    return code, time.monotonic() - started


async def test_worker_stopped_mid_stream_commits_its_batch_and_leaves_the_rest(
    tmp_path: Path, env: dict[str, str]
) -> None:
    redis: Any = aioredis.Redis.from_url(env["RAILBOOK_REDIS_URL"])
    (tmp_path / "api").mkdir()
    api = ServeProcess(tmp_path / "api", env)
    first, second = Committer(tmp_path, env, "first"), Committer(tmp_path, env, "second")
    tally_stop = asyncio.Event()
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(redis.aclose)
        for process in (second, first, api):
            stack.push_async_callback(process.stop)
        stack.callback(resume, first)
        await asyncio.gather(api.start("api"), first.start())
        client = await stack.enter_async_context(crowd_client(api.url, SHOPPERS + 10))
        day, shoppers = await hot_day(
            client, env["RAILBOOK_DATABASE_URL"], rows=ROWS, stops=STOPS, shoppers=SHOPPERS
        )
        stream = order_stream_key(day["train_code"], dt.date.fromisoformat(day["date"]))
        tally = Tally()
        rng = random.Random(31)
        crowd = [
            asyncio.create_task(shop(client, s, day, tally_stop, tally, random.Random(rng.random())))
            for s in shoppers
        ]
        try:

            async def committing() -> bool:
                held = await committed(env["RAILBOOK_DATABASE_URL"], list(tally.accepted))
                return len(held) >= 10

            await wait_until(committing, timeout=30, what=f"orders committed:\n{log_tail(first.log)}")
            # Paused, the committer reads nothing more; the crowd keeps ordering, so the stream fills
            # with entries it has not read (and Redis may hand it one more batch while it sleeps).
            os.kill(first.pid, signal.SIGSTOP)
            await wait_until(first.paused, timeout=5.0, interval=0.001, what="the first committer paused")

            async def unread() -> bool:
                return int((await group_of(redis, stream)).get("lag") or 0) >= 3 * BATCH

            await wait_until(unread, timeout=30, what="entries the committer has not read")
            code, took = await sigterm(first)
            log = first.log.read_text(errors="replace")
            assert code == 0, f"exit status {code}:\n{log_tail(first.log)}"
            assert took < STOPPED_WITHIN_S, f"took {took:.1f} s to stop:\n{log_tail(first.log)}"
            assert "background_roles_stopped" in log and "background_role_did_not_stop" not in log, log
            # Its batch committed and acknowledged; what it had not read is still in the stream.
            assert await pending_of(redis, stream, first.name) == 0
            left = int((await group_of(redis, stream)).get("lag") or 0)
            assert left >= 2 * BATCH, f"only {left} entries left in the stream"
            await second.start()
            await wait_until(lambda: drained(redis, stream), timeout=45, interval=0.2, what="stream drained")
        finally:
            tally_stop.set()
            await asyncio.gather(*crowd)
        logs = [api.log, first.log, second.log]
        await wait_until(lambda: drained(redis, stream), timeout=45, interval=0.2, what="the stream drained")
        finals = await settle_orders(client, tally, within_s=45, lost_ok=False, logs=logs)
        assert set(finals) <= FINAL
        figures = await audit_day(env["RAILBOOK_DATABASE_URL"], day, env) | await recorded(
            env["RAILBOOK_DATABASE_URL"], tally
        )
        held = await committed(env["RAILBOOK_DATABASE_URL"], list(tally.accepted))
        assert len(held) == len(tally.accepted)
        report("worker stopped mid-stream", tally, finals, figures | {"left_in_stream": left})
        assert_clean(tally, logs)


async def test_scheduler_stops_on_sigterm_and_gives_up_leadership(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """``railbook scheduler`` leads (holds the leader key), and on SIGTERM exits 0 at once, releasing it."""
    from railbook.workers.scheduler import LEADER_KEY

    redis: Any = aioredis.Redis.from_url(env["RAILBOOK_REDIS_URL"])
    scheduler = ServeProcess(tmp_path, env)
    try:
        await scheduler.spawn("scheduler")
        await wait_until(
            lambda: redis.exists(LEADER_KEY), timeout=60, what=f"leadership:\n{log_tail(scheduler.log)}"
        )
        code, took = await sigterm(scheduler)
        assert code == 0, log_tail(scheduler.log)
        assert took < STOPPED_WITHIN_S, f"took {took:.1f} s to stop:\n{log_tail(scheduler.log)}"
        assert not await redis.exists(LEADER_KEY)
    finally:
        await scheduler.stop()
        await redis.aclose()
