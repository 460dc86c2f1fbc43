"""A small flash sale against real servers (railbook serve over PostgreSQL + Redis, and the naive
design): the crowd plays the whole path and the bench's audit finds nothing wrong. No timing."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from railbook.bench import site as sites
from railbook.bench.audit import audit, wait_final
from railbook.bench.crowd import spread
from railbook.bench.flash_sale import run_design
from railbook.bench.scenario import Scenario, prepare
from tests.conftest import claimed_redis_db, fresh_pg_database
from tests.live_server import serve

pytestmark = pytest.mark.slow

SMALL = Scenario(members=16, trains=2, stops=6, seats=24, passengers_per_member=3)


def _play(site: sites.Site) -> dict[str, dict[str, object]]:
    plan = asyncio.run(prepare(site.url, SMALL, say=lambda _: None))
    crowd, _, _ = spread("crowd", plan, 1, {"connections": 8, "ramp": 0.5})
    assert crowd.orders, "no order was accepted"
    assert any(o["status"] == "SUCCESS" for o in crowd.orders)
    asyncio.run(wait_final(site, len(crowd.orders), within_s=60))
    return asyncio.run(audit(site, plan, crowd))


def test_railbook_flash_sale_audits_clean(tmp_path: Path) -> None:
    with fresh_pg_database() as db_url, claimed_redis_db(7) as redis_url:
        settings = {
            "RAILBOOK_DATABASE_URL": db_url,
            "RAILBOOK_REDIS_URL": redis_url,
            "RAILBOOK_RATE_LIMITS": "off",
            "RAILBOOK_LOAD_SAMPLE_DATA": "false",
            "RAILBOOK_ADMIN_MOBILE": sites.ADMIN_MOBILE,
            "RAILBOOK_ADMIN_PASSWORD": sites.ADMIN_PASSWORD,
            "RAILBOOK_JWT_SECRET": "bench-test-" + "z" * 40,
            "RAILBOOK_ARGON2_TIME_COST": "1",
            "RAILBOOK_ARGON2_MEMORY_COST": "1024",
        }
        with serve(tmp_path, settings) as server:
            env = {k: v for k, v in os.environ.items() if not k.startswith("RAILBOOK_")}
            site = sites.Site(
                "railbook",
                server.url,
                db_url.replace("postgresql+asyncpg://", "postgresql://"),
                redis_url,
                env={**env, **settings},
            )
            checks = _play(site)
    assert all(check["ok"] for check in checks.values()), checks


def test_naive_flash_sale_audits_clean() -> None:
    with sites.naive_site(api_workers=1) as site:
        checks = _play(site)
    assert all(check["ok"] for check in checks.values()), checks


def test_flash_sale_on_a_redis_cluster_with_several_nodes_audits_clean() -> None:
    """``railbook bench flash-sale --redis-primaries 3 --api-nodes 2 --committers 2`` at a small size:
    the crowd is spread over both API nodes, both committers and the cluster's primaries do the work,
    the audit is clean, and the CPU of every role and the Redis command time are reported."""
    options = {
        "api_workers": 1,
        "redis_db": 7,
        "redis_primaries": 3,
        "api_nodes": 2,
        "committers": 2,
        "load_procs": 1,
        "connections": 8,
        "ramp": 0.5,
        "hello_seconds": 0.5,
    }
    result = run_design("railbook", SMALL, options)
    assert all(check["ok"] for check in result["audit"].values()), result["audit"]
    assert len(result["site"]["api_nodes"]) == 2 and len(result["site"]["redis_nodes"]) == 3
    f = result["figures"]
    assert f["final_statuses"].get("SUCCESS", 0) > 0, f["final_statuses"]
    cpu = f["cpu_seconds"]
    # Each API node answered its share of the crowd (an idle one uses next to no CPU).
    assert cpu["api-1"] > 0.1 and cpu["api-2"] > 0.1, cpu
    assert {"committer-1", "committer-2", "Redis primary 1", "Redis primary 2", "Redis primary 3"} <= set(cpu)
    assert f["per_order_from_s"] > -1.0, "the per-order readings began before the crowd had logged in"
    roles = f["cpu_ms_per_order_by_role"]
    for role in ("API processes", "committers", "Redis primaries", "PostgreSQL for committers"):
        assert roles[role] > 0, roles
    redis_time = f["redis_time"]
    assert redis_time["script_usec_per_order"] > 0, redis_time
    assert redis_time["commands"]["evalsha"]["calls"] >= len(f["series"]["time_to_known_s"]), redis_time
