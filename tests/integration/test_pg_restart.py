"""Fault harness, PostgreSQL itself: the real ``railbook serve`` of ``test_faults`` runs on a private
PostgreSQL cluster (``tests/private_pg.py``), which is shut down cleanly or crashed in the middle of the
crowd and started again on the same port and data. While it is down every request that needs it is
answered 503 with Retry-After (no other 5xx, no hang, no refused connection); once it is back, every
order accepted with 202 ends final and stands in the database, and the audit of ``test_faults`` holds
(no seat segment twice, nothing beyond capacity, the allocator agrees with the database)."""

from __future__ import annotations

import asyncio
import functools
import random
from pathlib import Path
from typing import Any

import pytest

from tests.crowd import call, recorded
from tests.integration.test_faults import (
    Stage,
    assert_clean,
    audit,
    crowd_phase,
    database_outage,
    report,
    settle,
    stage,
)
from tests.private_pg import PrivatePostgres, private_postgres

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

DOWN_S = 3.0  # how long the database stays down
BROWSERS = 10


def pages(s: Stage, k: int) -> list[tuple[str, dict[str, Any]]]:
    """What a browsing member reads (200, or 503 while a store it needs is down): journeys, a seat
    map, station names, a timetable, the member's own account, orders and tickets, the metrics."""
    names = [name for name, _ in s.day["stations"]]
    date, code = s.day["date"], s.day["train_code"]
    own = {"headers": s.shoppers[k % len(s.shoppers)].headers}
    return [
        ("/api/v1/trains/search", {"params": {"from": names[0], "to": names[-1], "date": date}}),
        (
            f"/api/v1/trains/{code}/seat-map",
            {"params": {"from": names[0], "to": names[2], "date": date, "seat_class": "second"}},
        ),
        ("/api/v1/stations", {"params": {"q": names[1][:2]}}),
        (f"/api/v1/trains/{code}/stops", {}),
        ("/api/v1/me", own),
        ("/api/v1/passengers", own),
        ("/api/v1/orders", own),
        ("/api/v1/tickets", own),
        ("/api/v1/waitlist", own),
        ("/metrics", {}),
    ]


async def browse(s: Stage, k: int) -> None:
    """Read pages at random beside the shoppers until the crowd stops."""
    rng = random.Random(k)
    choices = pages(s, k)
    while not s.stop.is_set():
        path, kw = rng.choice(choices)
        await call(s.client, s.tally, "GET", path, **kw)
        await asyncio.sleep(0.1)


async def restart_mid_crowd(tmp_path: Path, pg: PrivatePostgres, mode: str, name: str) -> None:
    async with stage(tmp_path, pg_admin_dsn=pg.admin_dsn) as (s, _):
        s.start_crowd()
        s.tasks += [asyncio.create_task(browse(s, k), name="browser") for k in range(BROWSERS)]
        assert await crowd_phase(s, 3.0) > 0
        await database_outage(s, functools.partial(pg.stop, mode), pg.start, down_s=DOWN_S)
        await s.stop_crowd()
        finals = await settle(s, within_s=30, lost_ok=False)
        figures = await audit(s) | await recorded(s.pg_url, s.tally)
        report(name, s, finals, figures)
        assert_clean(s)


async def test_postgres_restarted_mid_crowd(tmp_path: Path) -> None:
    """A clean restart (``pg_ctl stop -m fast``, then start): connections are closed under statements
    in flight, new ones are refused while it shuts down and is down."""
    async with private_postgres() as pg:
        await restart_mid_crowd(tmp_path, pg, "fast", "postgres restarted")


async def test_postgres_crashed_mid_crowd(tmp_path: Path) -> None:
    """A crash (``pg_ctl stop -m immediate``) and a start with crash recovery: what was committed
    before the crash is there after it; nothing acknowledged to a client is lost."""
    async with private_postgres() as pg:
        await restart_mid_crowd(tmp_path, pg, "immediate", "postgres crashed")
