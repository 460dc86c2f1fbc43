"""Several nodes, each a real process, on one PostgreSQL database and the three-primary Redis Cluster:
three API nodes (``railbook api``) on three ports and two committers (``railbook worker`` under
distinct consumer names). A crowd of HTTP clients spread round-robin over the API nodes books one hot
train-day. In the middle one API node is killed (SIGKILL): its clients move to the other nodes and
send again what went unanswered, an order under its Idempotency-Key — any node answers for any
member and any order. Then one committer is killed at a moment it holds entries it read and had not
acknowledged: the surviving committer claims them and commits them.

Afterwards the audit of ``tests/crowd.py``: every 202 order final and in the database, no seat
segment sold twice, none beyond the day's seats, the allocator in the cluster equal to the database,
no 500 (503 only with Retry-After); the dead committer's entries claimed by the survivor and committed.

A node killed between an order's admission round trip (its Idempotency-Key claim and pending record)
and its allocation leaves the claim behind, so the client's resend under that key is answered 202 with
the order's id by another node although the order was never queued (about one run in ten). Such an
order is the only one allowed to be missing from the drained stream: once the committers are past it,
reading it gives its admission back and it reads FAILURE (LOST_IN_FAILOVER), as the contract says of
an accepted order that was lost; it is set aside before the audit of the database."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import random
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from railbook.adapters.db.models import Order
from railbook.adapters.redis.allocator import order_stream_key
from railbook.adapters.redis.stream import GROUP
from railbook.bootstrap import make_redis
from railbook.services.booking.read_model import PENDING_TRUSTED_SECONDS
from tests.conftest import fresh_pg_database
from tests.crowd import (
    FINAL,
    Route,
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

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

API_NODES = 3
COMMITTERS = ("committer-a", "committer-b")
ROWS = 12  # one second-class carriage: 60 seats
STOPS = 5
SHOPPERS = 60
START_TIMEOUT_S = 90.0


class Committer(ServeProcess):
    """``railbook worker --name NAME``: a member of the order streams' consumer group (with unpaid-order
    expiry and the outbox relay), to be paused or killed by its pid."""

    def __init__(self, workdir: Path, env: dict[str, str], name: str) -> None:
        super().__init__(workdir, env)
        self.name = name
        self.log = workdir / f"{name}.log"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self, role: str = "worker") -> None:
        """Start it and wait until its committer loop runs."""
        proc = await self.spawn(role, "--name", self.name)
        deadline = time.monotonic() + START_TIMEOUT_S
        while "order_committer_started" not in self.log.read_text(errors="replace"):
            assert proc.returncode is None, f"{self.name} exited:\n{log_tail(self.log)}"
            assert time.monotonic() < deadline, f"{self.name} did not start:\n{log_tail(self.log)}"
            await asyncio.sleep(0.1)

    def paused(self) -> bool:
        """Whether the process is stopped (SIGSTOP has taken effect)."""
        state = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state in ("T", "t")


@pytest.fixture
def database() -> Iterator[str]:
    """A fresh migrated PostgreSQL database, shared by every node of the test."""
    with fresh_pg_database() as url:
        yield url


@contextlib.asynccontextmanager
async def nodes(
    workdir: Path, env: dict[str, str]
) -> AsyncIterator[tuple[list[ServeProcess], list[Committer]]]:
    """The API nodes and the committers, started together; whatever still runs is stopped afterwards."""
    apis = []
    for k in range(API_NODES):
        (workdir / f"api-{k + 1}").mkdir()
        apis.append(ServeProcess(workdir / f"api-{k + 1}", env))
    committers = [Committer(workdir, env, name) for name in COMMITTERS]
    try:
        await asyncio.gather(*(n.start("api") for n in apis), *(c.start() for c in committers))
        yield apis, committers
    finally:
        for process in [*apis, *committers]:
            with contextlib.suppress(AssertionError):
                await process.stop()


async def kill_holding_entries(committer: Committer, redis: Any, stream: str) -> list[str]:
    """Kill the committer (SIGKILL) at a moment it holds entries of ``stream`` it read and has not
    acknowledged: it is paused (SIGSTOP) and looked at until it does. The ids of those orders."""
    deadline = time.monotonic() + 20
    while True:
        os.kill(committer.pid, signal.SIGSTOP)
        await wait_until(committer.paused, timeout=5.0, interval=0.001, what=f"{committer.name} paused")
        pending = await redis.xpending_range(
            stream, GROUP, min="-", max="+", count=1000, consumername=committer.name
        )
        if pending:
            await committer.kill()
            break
        os.kill(committer.pid, signal.SIGCONT)
        assert time.monotonic() < deadline, (
            f"{committer.name} never held an entry:\n{log_tail(committer.log)}"
        )
        await asyncio.sleep(random.uniform(0.02, 0.08))
    orders = []
    for p in pending:
        entry_id = p["message_id"]
        [(_, fields)] = await redis.xrange(stream, min=entry_id, max=entry_id)
        orders.append(str(json.loads(fields[b"order"])["order_id"]))
    return orders


def claims(log: Path) -> list[tuple[str, int]]:
    """What a committer's log says it claimed from consumers gone silent: (consumer, entries)."""
    out = []
    for line in log.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if event.get("event") == "order_stream_claimed_from_gone":
                out.append((str(event["consumer"]), int(event["n"])))
    return out


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def committed(pg_url: str, order_ids: list[str]) -> dict[str, str]:
    """The database's status of each of these orders that it holds."""
    engine = create_async_engine(pg_url)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(select(Order.id, Order.status).where(Order.id.in_(order_ids)))).all()
    finally:
        await engine.dispose()
    return {order_id: status for order_id, status in rows}


async def drained(redis: Any, stream: str) -> bool:
    """Every entry of the stream delivered to a committer and acknowledged."""
    groups = [g for g in await redis.xinfo_groups(stream) if _text(g["name"]) == GROUP]
    return bool(groups) and int(groups[0]["pending"]) == 0 and int(groups[0].get("lag") or 0) == 0


async def queued(redis: Any, stream: str) -> set[str]:
    """The ids of the orders in the train-day's stream (its entries are never trimmed)."""
    out: set[str] = set()
    start = "-"
    while entries := await redis.xrange(stream, min=start, count=1000):
        out |= {str(json.loads(fields[b"order"])["order_id"]) for _, fields in entries}
        start = "(" + _text(entries[-1][0])
    return out


async def set_aside_never_queued(
    redis: Any, stream: str, tally: Tally, client: httpx.AsyncClient
) -> set[str]:
    """Orders answered 202 whose allocation never ran (not in the stream once it is drained), taken
    out of the tally's accepted orders. Only an order claimed under its Idempotency-Key by the node
    that was killed before it allocated can be one — its resend is answered 202 from the claim by
    another node — so any other is a failure here; each must come to read FAILURE (LOST_IN_FAILOVER)
    once the committers are past it (``read_model.PENDING_TRUSTED_SECONDS`` after its acceptance)."""
    never = set(tally.accepted) - await queued(redis, stream)
    assert never <= tally.accepted_on_resend, f"202 orders never queued: {never - tally.accepted_on_resend}"
    for order_id in never:
        headers = tally.accepted.pop(order_id)

        async def lost(order_id: str = order_id, headers: dict[str, str] = headers) -> Any:
            r = await client.get(f"/api/v1/orders/{order_id}", headers=headers)
            assert r.status_code == 200, r.text
            return r.json() if r.json()["status"] != "PENDING" else None

        seen = await wait_until(
            lost, timeout=PENDING_TRUSTED_SECONDS + 30, interval=1.0, what=f"{order_id} lost"
        )
        assert seen["status"] == "FAILURE" and seen["error"]["code"] == "LOST_IN_FAILOVER", seen
    return never


async def crowd_phase(tally: Tally, seconds: float) -> int:
    """Let the crowd run; how many orders were accepted in that time."""
    before = len(tally.accepted)
    await asyncio.sleep(seconds)
    return len(tally.accepted) - before


async def test_api_node_and_committer_killed_mid_crowd_lose_nothing(
    tmp_path: Path, database: str, cluster_url: str
) -> None:
    env = server_env(database, cluster_url, RAILBOOK_REDIS_CLUSTER="true")
    redis: Any = make_redis(cluster_url, cluster=True)
    tally = Tally()
    stop = asyncio.Event()
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(redis.aclose)
        apis, committers = await stack.enter_async_context(nodes(tmp_path, env))
        clients = [await stack.enter_async_context(crowd_client(n.url, SHOPPERS + 10)) for n in apis]
        for client in clients:  # what a load balancer's health check asks
            ready = await client.get("/readyz")
            assert ready.status_code == 200, ready.text
        day, shoppers = await hot_day(clients[0], database, rows=ROWS, stops=STOPS, shoppers=SHOPPERS)
        stream = order_stream_key(day["train_code"], dt.date.fromisoformat(day["date"]))
        rng = random.Random(23)
        crowd = [
            asyncio.create_task(
                shop(Route(clients, at=k, resend=True), s, day, stop, tally, random.Random(rng.random()))
            )
            for k, s in enumerate(shoppers)
        ]
        try:
            assert await crowd_phase(tally, 3.0) > 0, log_tail(apis[0].log)
            # An API node killed outright: its clients' requests in flight go unanswered.
            killed_api = apis[-1]
            await killed_api.kill()
            assert await crowd_phase(tally, 3.0) > 0, "nothing accepted after an API node was killed"
            assert tally.resent > 0, "no client moved off the killed node"
            # A committer killed with entries it read and had not acknowledged.
            dead, survivor = committers[1], committers[0]
            stranded = await kill_holding_entries(dead, redis, stream)
            assert await crowd_phase(tally, 3.0) > 0, "nothing accepted after a committer was killed"
        finally:
            stop.set()
            await asyncio.gather(*crowd)
        living = [n.log for n in apis if n is not killed_api] + [survivor.log]
        try:
            await wait_until(
                lambda: drained(redis, stream), timeout=45, interval=0.5, what="the stream drained"
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}:\n" + "\n".join(log_tail(p) for p in living)) from None
        never_queued = await set_aside_never_queued(redis, stream, tally, clients[0])
        finals = await settle_orders(clients[0], tally, within_s=45, lost_ok=False, logs=living)
        # The dead committer's entries: claimed by the survivor, committed, acknowledged.
        held = await committed(database, stranded)
        assert set(held) == set(stranded), f"stranded orders not committed: {set(stranded) - set(held)}"
        assert set(held.values()) <= FINAL, held
        consumers = {_text(c["name"]): c for c in await redis.xinfo_consumers(stream, GROUP)}
        assert consumers[dead.name]["pending"] == 0, consumers
        claimed = sum(n for consumer, n in claims(survivor.log) if consumer == dead.name)
        assert claimed >= len(stranded), f"claimed {claimed} of {len(stranded)}:\n{log_tail(survivor.log)}"
        figures = await audit_day(database, day, env) | await recorded(database, tally)
        figures |= {"stranded": len(stranded), "claimed": claimed, "never_queued": len(never_queued)}
        report("api node and committer killed", tally, finals, figures)
        assert_clean(tally, [*living, killed_api.log, dead.log], refused_ok=True)
