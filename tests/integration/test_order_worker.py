"""The order committer against real PostgreSQL and Redis: idempotent redelivery, and a worker killed
mid-batch whose messages a second worker claims back (XAUTOCLAIM) — nothing lost, nothing doubled."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import psycopg
import pytest
import redis.asyncio as aioredis
from sqlalchemy import func, select

from railbook.adapters.db.models import Order, Ticket
from railbook.adapters.redis.allocator import order_stream_key
from railbook.adapters.redis.stream import GROUP
from railbook.bootstrap import Container
from railbook.services.booking.commit import commit_batch, parse_message
from tests.integration.sale_days import committer_running
from tests.support import (
    JWT_SECRET,
    add_passenger,
    admin,
    app_client,
    app_settings,
    container_for,
    make_train_day,
    order_body,
    register,
    wait_until,
)


@pytest.fixture(scope="module")
def quiet_redis_url(module_redis_url: str) -> str:
    """A Redis database claimed by this module, which no in-process committer reads: only the workers
    under test consume its streams."""
    return module_redis_url


@pytest.fixture(scope="module")
async def quiet_client(pg_url: str, quiet_redis_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The app on that database, its background loops (the committer among them) not running."""
    async with app_client(app_settings(pg_url, quiet_redis_url), run_background=False) as client:
        yield client


async def _queued_orders(client: httpx.AsyncClient, n: int) -> tuple[dict[str, Any], list[str]]:
    day = await make_train_day(client, await admin(client), rows=4)
    ids = []
    for _ in range(n):
        m = await register(client)
        p = await add_passenger(client, m["headers"])
        r = await client.post("/api/v1/orders", json=order_body(day, [p]), headers=m["headers"])
        assert r.status_code == 202, r.text
        ids.append(r.json()["order_id"])
    return day, ids


def _stream_of(day: dict[str, Any]) -> str:
    return order_stream_key(day["train_code"], dt.date.fromisoformat(day["date"]))


async def _stream_entries(url: str, day: dict[str, Any]) -> list[tuple[bytes, dict[bytes, bytes]]]:
    r = aioredis.Redis.from_url(url)
    try:
        return list(await r.xrange(_stream_of(day)))
    finally:
        await r.aclose()


async def _pending(r: Any, stream: str) -> int:
    """Messages of ``stream`` delivered to a committer and not acknowledged (0 before the group exists)."""
    try:
        info = await r.xpending(stream, GROUP)
    except aioredis.ResponseError:  # NOGROUP: no committer has read the stream yet
        return 0
    return int(info["pending"])


async def test_redelivered_batch_changes_nothing(
    quiet_client: httpx.AsyncClient, quiet_redis_url: str
) -> None:
    container = quiet_client.app.state.container  # type: ignore[attr-defined]
    day, ids = await _queued_orders(quiet_client, 3)
    messages = [parse_message(fields) for _, fields in await _stream_entries(quiet_redis_url, day)]
    assert [m.order_id for m in messages] == ids
    first = await commit_batch(container, messages)
    again = await commit_batch(container, messages + messages[:1])
    assert [m.order_id for m in first.committed] == ids
    assert sorted(m.order_id for m in again.committed) == sorted(ids) and not again.failed
    async with container.sessionmaker() as session:
        n_orders = (
            await session.execute(select(func.count()).select_from(Order).where(Order.id.in_(ids)))
        ).scalar_one()
        n_tickets = (
            await session.execute(select(func.count()).select_from(Ticket).where(Ticket.order_id.in_(ids)))
        ).scalar_one()
    assert (n_orders, n_tickets) == (3, 3)


def _worker(
    pg_url: str, redis_url: str, name: str, claim_idle_ms: int, *, cluster: bool = False
) -> subprocess.Popen[bytes]:
    code = (
        "import asyncio\n"
        "from railbook.config import Settings\n"
        "from railbook.bootstrap import build_container\n"
        "from railbook.workers.order_worker import run_stream_committer\n"
        "async def main():\n"
        "    c = await build_container(Settings())\n"
        f"    await run_stream_committer(c, {name!r}, claim_idle_ms={claim_idle_ms})\n"
        "asyncio.run(main())\n"
    )
    env = {
        **os.environ,
        "RAILBOOK_DATABASE_URL": pg_url,
        "RAILBOOK_REDIS_URL": redis_url,
        "RAILBOOK_JWT_SECRET": JWT_SECRET,
        "RAILBOOK_WORKER_BLOCK_MS": "100",
        "RAILBOOK_REDIS_CLUSTER": str(cluster).lower(),
    }
    return subprocess.Popen(
        [sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


_ORDER_INSERT_WAITING = """
    SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE a.datname = current_database() AND l.relation = '"order"'::regclass AND NOT l.granted
      AND a.query LIKE '%INSERT INTO "order"%'
"""


@pytest.mark.slow
async def test_worker_killed_mid_batch_loses_and_doubles_nothing(
    quiet_client: httpx.AsyncClient, quiet_redis_url: str, pg_url: str
) -> None:
    await killed_worker_is_rescued(
        quiet_client, quiet_redis_url, pg_url, aioredis.Redis.from_url(quiet_redis_url)
    )


async def killed_worker_is_rescued(
    quiet_client: httpx.AsyncClient, quiet_redis_url: str, pg_url: str, r: Any, *, cluster: bool = False
) -> None:
    """A worker killed inside its commit leaves its batch pending; a second worker claims it back and
    commits it, nothing lost, nothing doubled (``r``: a client of that Redis, closed at the end)."""
    container = quiet_client.app.state.container  # type: ignore[attr-defined]
    day, ids = await _queued_orders(quiet_client, 4)
    stream = _stream_of(day)
    dsn = pg_url.replace("postgresql+asyncpg://", "postgresql://")

    async def committed() -> int:
        async with container.sessionmaker() as session:
            return int(
                (
                    await session.execute(select(func.count()).select_from(Order).where(Order.id.in_(ids)))
                ).scalar_one()
            )

    # Hold the order table so the first worker reads the batch and then blocks inside its commit.
    # Taken from a thread: in-process apps of the session run their background loops on this event
    # loop, and one may hold the table until the loop lets it finish.
    lock = psycopg.connect(dsn)
    await asyncio.to_thread(lock.execute, 'LOCK TABLE "order" IN ACCESS EXCLUSIVE MODE')
    first = _worker(pg_url, quiet_redis_url, "doomed", 60_000, cluster=cluster)
    try:

        async def read_by_first() -> bool:
            return await _pending(r, stream) == len(ids)

        def waiting_insert() -> bool:
            # Not on the lock's connection: within its transaction pg_stat_activity stays one snapshot.
            with psycopg.connect(dsn, autocommit=True) as watch:
                row = watch.execute(_ORDER_INSERT_WAITING).fetchone()
            return bool(row and row[0])

        async def inserting() -> bool:
            return await asyncio.to_thread(waiting_insert)

        await wait_until(read_by_first, timeout=15, what="the first worker to read the batch")
        await wait_until(inserting, timeout=15, what="the first worker to wait inside its INSERT")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:  # the wait above failed: never leave a consumer of this database behind
            first.kill()
            first.wait(10)
        lock.rollback()
        lock.close()
    assert await committed() == 0
    assert await _pending(r, stream) == len(ids)

    second = _worker(pg_url, quiet_redis_url, "rescuer", 200, cluster=cluster)
    try:

        async def all_done() -> bool:
            return await _pending(r, stream) == 0 and await committed() == len(ids)

        await wait_until(all_done, timeout=30, what="the second worker to claim and commit the batch")
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(10)
        await r.aclose()
    async with container.sessionmaker() as session:
        statuses = (await session.execute(select(Order.status).where(Order.id.in_(ids)))).scalars().all()
        tickets = (
            (await session.execute(select(Ticket.order_id).where(Ticket.order_id.in_(ids)))).scalars().all()
        )
    assert sorted(statuses) == ["SUCCESS"] * len(ids)
    assert sorted(tickets) == sorted(ids)  # one ticket each, none doubled


async def _count_committed(container: Container, ids: list[str]) -> int:
    async with container.sessionmaker() as session:
        n = await session.execute(select(func.count()).select_from(Order).where(Order.id.in_(ids)))
        return int(n.scalar_one())


async def test_a_partial_read_waits_for_more_and_commits_them_together(
    quiet_client: httpx.AsyncClient, quiet_redis_url: str, pg_url: str
) -> None:
    """An order arriving while the committer lingers on a partial read joins that batch: one
    transaction writes both (they share its timestamp), and neither waits for a later read."""
    settings = app_settings(pg_url, quiet_redis_url).model_copy(
        update={"worker_linger_ms": 800, "worker_block_ms": 100}
    )
    r = aioredis.Redis.from_url(quiet_redis_url)
    async with container_for(settings) as worker, committer_running(worker, "lingerer"):
        day = await make_train_day(quiet_client, await admin(quiet_client), rows=4)
        stream = _stream_of(day)
        riders = []
        for _ in range(3):
            m = await register(quiet_client)
            riders.append((m["headers"], await add_passenger(quiet_client, m["headers"])))
        ids: list[str] = []

        async def place(headers: dict[str, str], p: int) -> None:
            r = await quiet_client.post("/api/v1/orders", json=order_body(day, [p]), headers=headers)
            assert r.status_code == 202, r.text
            ids.append(r.json()["order_id"])

        async def committed(n: int) -> bool:
            return await _count_committed(worker, ids) == n

        async def lingering() -> bool:
            return await _pending(r, stream) == 1  # read, not yet acknowledged

        try:
            await place(*riders[0])  # the committer learns the day's stream and commits this one
            await wait_until(lambda: committed(1), timeout=30, what="the first order to be committed")
            ids.clear()
            await place(*riders[1])
            await wait_until(lingering, timeout=15, what="the committer to read the second order")
            await place(*riders[2])
            await wait_until(lambda: committed(2), timeout=15, what="both orders to be committed")
        finally:
            await r.aclose()
        async with worker.sessionmaker() as session:
            stamps = (
                (await session.execute(select(Order.updated_at).where(Order.id.in_(ids)))).scalars().all()
            )
        assert len(set(stamps)) == 1, stamps


def _cli_worker(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "railbook.cli", "worker", "--name", "nice-test"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _nice_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rpartition(")")[2].split()[16])


@pytest.mark.slow
async def test_the_worker_role_runs_below_the_api_priority(pg_url: str, quiet_redis_url: str) -> None:
    """``railbook worker`` lowers its own CPU priority by RAILBOOK_WORKER_NICE once it has started."""
    env = {
        **os.environ,
        "RAILBOOK_DATABASE_URL": pg_url,
        "RAILBOOK_REDIS_URL": quiet_redis_url,
        "RAILBOOK_JWT_SECRET": JWT_SECRET,
        "RAILBOOK_WORKER_NICE": "7",
    }
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    worker = _cli_worker(env)

    async def niced() -> bool:
        return _nice_of(worker.pid) == ours + 7

    try:
        await wait_until(niced, timeout=30, what="the worker to lower its priority")
        assert worker.poll() is None
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(10)


async def test_sale_tokens_bound_the_orders_waiting_for_commit(
    quiet_client: httpx.AsyncClient, quiet_redis_url: str, pg_url: str
) -> None:
    """With N sale tokens a train-day has at most N accepted orders waiting for their commit: the next
    is answered 503 SALE_BUSY with Retry-After and nothing queued, and a commit gives tokens back."""
    settings = app_settings(pg_url, quiet_redis_url).model_copy(update={"sale_tokens_per_train_day": 2})
    async with app_client(settings, run_background=False) as client:
        day = await make_train_day(client, await admin(client), rows=4)
        riders = []
        for _ in range(3):
            m = await register(client)
            riders.append((m["headers"], await add_passenger(client, m["headers"])))

        async def order(k: int) -> httpx.Response:
            headers, p = riders[k]
            return await client.post("/api/v1/orders", json=order_body(day, [p]), headers=headers)

        ids = []
        for k in range(2):
            r = await order(k)
            assert r.status_code == 202, r.text
            ids.append(r.json()["order_id"])
        busy = await order(2)
        assert busy.status_code == 503, busy.text
        assert busy.json()["error"]["code"] == "SALE_BUSY"
        assert int(busy.headers["Retry-After"]) >= 1
        assert len(await _stream_entries(quiet_redis_url, day)) == 2  # nothing queued for the refusal

        async with container_for(settings) as worker, committer_running(worker, "token-giver"):

            async def both_committed() -> bool:
                return await _count_committed(worker, ids) == 2

            async def accepted() -> httpx.Response | None:
                r = await order(2)
                return None if r.status_code == 503 else r

            await wait_until(both_committed, timeout=30, what="the two orders to be committed")
            # The tokens come back just after the commit (the settle).
            r = await wait_until(accepted, timeout=5, what="a sale token to come back")
            assert r.status_code == 202, r.text
