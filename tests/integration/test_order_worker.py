"""The order committer against real PostgreSQL and Redis: idempotent redelivery, and a worker killed
mid-batch whose messages a second worker claims back (XAUTOCLAIM) — nothing lost, nothing doubled."""

from __future__ import annotations

import asyncio
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
from asgi_lifespan import LifespanManager
from sqlalchemy import func, select

from railbook.adapters.db.models import Order, Ticket
from railbook.adapters.redis.allocator import order_stream_key
from railbook.api.app import create_app
from railbook.services.booking.commit import commit_batch, parse_message
from tests.api.conftest import ADMIN_MOBILE, ADMIN_PASSWORD, login, register, test_settings
from tests.api.test_orders import add_passenger, make_train_day, order_body


@pytest.fixture(scope="module")
def quiet_redis_url(redis_url: str) -> str:
    """A Redis database no in-process committer reads, so only the workers under test consume."""
    base, db = redis_url.rsplit("/", 1)
    return f"{base}/{(int(db) + 4) % 16}"


@pytest.fixture(scope="module")
async def quiet_client(pg_url: str, quiet_redis_url: str) -> AsyncIterator[httpx.AsyncClient]:
    r = aioredis.Redis.from_url(quiet_redis_url)
    await r.flushdb()
    app = create_app(test_settings(pg_url, quiet_redis_url), run_background=False)
    async with LifespanManager(app, startup_timeout=60, shutdown_timeout=60) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=30) as client:
            client.app = app  # type: ignore[attr-defined]
            yield client
    await r.flushdb()
    await r.aclose()


async def _queued_orders(client: httpx.AsyncClient, n: int) -> tuple[dict[str, Any], list[str]]:
    day = await make_train_day(client, await login(client, ADMIN_MOBILE, ADMIN_PASSWORD), rows=4)
    ids = []
    for _ in range(n):
        m = await register(client)
        p = await add_passenger(client, m["headers"])
        r = await client.post("/api/v1/orders", json=order_body(day, [p]), headers=m["headers"])
        assert r.status_code == 202, r.text
        ids.append(r.json()["order_id"])
    return day, ids


async def _stream_entries(url: str, day: dict[str, Any]) -> list[tuple[bytes, dict[bytes, bytes]]]:
    import datetime as dt

    r = aioredis.Redis.from_url(url)
    try:
        return list(await r.xrange(order_stream_key(day["train_code"], dt.date.fromisoformat(day["date"]))))
    finally:
        await r.aclose()


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


def _worker(pg_url: str, redis_url: str, name: str, claim_idle_ms: int) -> subprocess.Popen[bytes]:
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
        "RAILBOOK_JWT_SECRET": "test-secret-" + "x" * 32,
        "RAILBOOK_WORKER_BLOCK_MS": "100",
    }
    return subprocess.Popen(
        [sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


async def _until(check: Any, what: str, tries: int = 300) -> None:
    for _ in range(tries):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def test_worker_killed_mid_batch_loses_and_doubles_nothing(
    quiet_client: httpx.AsyncClient, quiet_redis_url: str, pg_url: str
) -> None:
    import datetime as dt

    container = quiet_client.app.state.container  # type: ignore[attr-defined]
    day, ids = await _queued_orders(quiet_client, 4)
    stream = order_stream_key(day["train_code"], dt.date.fromisoformat(day["date"]))
    r = aioredis.Redis.from_url(quiet_redis_url)
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
    first = _worker(pg_url, quiet_redis_url, "doomed", 60_000)
    try:

        async def read_by_first() -> bool:
            try:
                info = await r.xpending(stream, "committers")
            except Exception:
                return False
            return int(info["pending"]) == len(ids)

        await _until(read_by_first, "the first worker to read the batch")
        await asyncio.sleep(0.3)  # well inside its (blocked) INSERT
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        lock.rollback()
        lock.close()
    assert await committed() == 0
    assert int((await r.xpending(stream, "committers"))["pending"]) == len(ids)

    second = _worker(pg_url, quiet_redis_url, "rescuer", 200)
    try:

        async def all_done() -> bool:
            pending = int((await r.xpending(stream, "committers"))["pending"])
            return pending == 0 and await committed() == len(ids)

        await _until(all_done, "the second worker to claim and commit the batch", tries=600)
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


async def test_a_partial_read_waits_for_more_and_commits_them_together(
    quiet_client: httpx.AsyncClient, quiet_redis_url: str, pg_url: str
) -> None:
    """An order arriving while the committer lingers on a partial read joins that batch: one
    transaction writes both (they share its timestamp), and neither waits for a later read."""
    from railbook.bootstrap import build_container
    from railbook.workers.order_worker import run_stream_committer

    settings = test_settings(pg_url, quiet_redis_url).model_copy(
        update={"worker_linger_ms": 800, "worker_block_ms": 100}
    )
    worker = await build_container(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(run_stream_committer(worker, "lingerer", stop=stop))
    try:
        day = await make_train_day(
            quiet_client, await login(quiet_client, ADMIN_MOBILE, ADMIN_PASSWORD), rows=4
        )
        riders = []
        for _ in range(3):
            m = await register(quiet_client)
            riders.append((m["headers"], await add_passenger(quiet_client, m["headers"])))
        ids: list[str] = []

        async def committed() -> int:
            async with worker.sessionmaker() as session:
                n = await session.execute(select(func.count()).select_from(Order).where(Order.id.in_(ids)))
                return int(n.scalar_one())

        async def place(headers: dict[str, str], p: int) -> None:
            r = await quiet_client.post("/api/v1/orders", json=order_body(day, [p]), headers=headers)
            assert r.status_code == 202, r.text
            ids.append(r.json()["order_id"])

        await place(*riders[0])  # the committer learns the day's stream and commits this one
        await _until(lambda: _is(committed, 1), "the first order to be committed", tries=600)
        ids.clear()
        await place(*riders[1])
        await asyncio.sleep(0.3)  # the committer has read it and lingers
        await place(*riders[2])
        await _until(lambda: _is(committed, 2), "both orders to be committed")
        async with worker.sessionmaker() as session:
            stamps = (
                (await session.execute(select(Order.updated_at).where(Order.id.in_(ids)))).scalars().all()
            )
        assert len(set(stamps)) == 1, stamps
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
        await worker.close()


async def _is(count: Any, n: int) -> bool:
    return bool(await count() == n)


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


async def test_the_worker_role_runs_below_the_api_priority(pg_url: str, quiet_redis_url: str) -> None:
    """``railbook worker`` lowers its own CPU priority by RAILBOOK_WORKER_NICE once it has started."""
    env = {
        **os.environ,
        "RAILBOOK_DATABASE_URL": pg_url,
        "RAILBOOK_REDIS_URL": quiet_redis_url,
        "RAILBOOK_JWT_SECRET": "test-secret-" + "x" * 32,
        "RAILBOOK_WORKER_NICE": "7",
    }
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    worker = _cli_worker(env)

    async def niced() -> bool:
        return _nice_of(worker.pid) == ours + 7

    try:
        await _until(niced, "the worker to lower its priority", tries=600)
        assert worker.poll() is None
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(10)


async def test_sale_tokens_bound_the_orders_waiting_for_commit(
    quiet_client: httpx.AsyncClient, quiet_redis_url: str, pg_url: str
) -> None:
    """With N sale tokens a train-day has at most N accepted orders waiting for their commit: the next
    is answered 503 SALE_BUSY with Retry-After and nothing queued, and a commit gives tokens back."""

    from railbook.bootstrap import build_container
    from railbook.workers.order_worker import run_stream_committer

    settings = test_settings(pg_url, quiet_redis_url).model_copy(update={"sale_tokens_per_train_day": 2})
    app = create_app(settings, run_background=False)
    async with (
        LifespanManager(app, startup_timeout=60, shutdown_timeout=60) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://test", timeout=30
        ) as client,
    ):
        day = await make_train_day(client, await login(client, ADMIN_MOBILE, ADMIN_PASSWORD), rows=4)
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

        worker = await build_container(settings)
        stop = asyncio.Event()
        task = asyncio.create_task(run_stream_committer(worker, "token-giver", stop=stop))
        try:

            async def committed() -> int:
                async with worker.sessionmaker() as session:
                    n = await session.execute(
                        select(func.count()).select_from(Order).where(Order.id.in_(ids))
                    )
                    return int(n.scalar_one())

            await _until(lambda: _is(committed, 2), "the two orders to be committed", tries=600)
            r = await order(2)
            for _ in range(100):  # the tokens come back just after the commit (the settle)
                if r.status_code != 503:
                    break
                await asyncio.sleep(0.05)
                r = await order(2)
            assert r.status_code == 202, r.text
        finally:
            stop.set()
            await asyncio.wait_for(task, 5)
            await worker.close()
