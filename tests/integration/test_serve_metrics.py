"""Distributed ``railbook serve`` (API processes and a committer process): /metrics, answered by any
API process, carries the figures counted in the others, the committer's among them."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import claimed_redis_db, fresh_pg_database
from tests.live_server import Site, serve
from tests.support import (
    ADMIN_MOBILE,
    ADMIN_PASSWORD,
    add_passenger,
    admin,
    make_train_day,
    order_body,
    register,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    workdir = tmp_path_factory.mktemp("serve-metrics")
    with fresh_pg_database() as pg, claimed_redis_db(9) as redis_url:
        settings = {
            "RAILBOOK_DATABASE_URL": pg,
            "RAILBOOK_REDIS_URL": redis_url,
            "RAILBOOK_ADMIN_MOBILE": ADMIN_MOBILE,
            "RAILBOOK_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "RAILBOOK_ARGON2_TIME_COST": "1",
            "RAILBOOK_ARGON2_MEMORY_COST": "1024",
            "RAILBOOK_RATE_LIMITS": "off",
            "RAILBOOK_LOAD_SAMPLE_DATA": "false",
            "RAILBOOK_WORKERS": "2",
            "RAILBOOK_METRICS_DIR": str(workdir / "metrics"),
        }
        with serve(workdir, settings) as running:
            yield running


def _value(text: str, sample: str) -> float:
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_any_api_process_reports_the_committers_counts(site: Site) -> None:
    async with httpx.AsyncClient(base_url=site.url, timeout=30) as client:
        day = await make_train_day(client, await admin(client))
        m = await register(client)
        p = await add_passenger(client, m["headers"])
        r = await client.post("/api/v1/orders", json=order_body(day, [p]), headers=m["headers"])
        assert r.status_code == 202, r.text
        committed = 'railbook_orders_total{outcome="committed"}'
        accepted = 'railbook_orders_total{outcome="accepted"}'

        async def every_scrape_counts_it() -> bool:
            # Several scrapes, over new connections: whichever API process answers has the figures.
            texts = []
            for _ in range(4):
                async with httpx.AsyncClient(base_url=site.url, timeout=30) as fresh:
                    texts.append((await fresh.get("/metrics")).text)
            return all(_value(t, committed) >= 1 and _value(t, accepted) >= 1 for t in texts)

        await wait_until(every_scrape_counts_it, timeout=30, what="the commit in every scrape")
        text = (await client.get("/metrics")).text
        assert _value(text, "railbook_tickets_sold_total") >= 1
        assert _value(text, "railbook_order_accept_to_commit_seconds_count") >= 1
        assert "railbook_order_queue_depth" in text and "railbook_waitlist_waiting" in text
        assert (await client.get("/readyz")).json()["checks"] == {
            "database": "ok",
            "cache": "ok",
            "queue": "ok",
        }
