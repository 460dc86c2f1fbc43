"""/metrics carries the business figures beside the HTTP ones, /readyz names each dependency, and the
Grafana dashboard in docs/ queries only what /metrics exports."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from railbook.metrics import MULTIPROC_ENV, share_between_processes
from tests.api.test_errors import assert_error_shape
from tests.support import add_passenger, admin, make_train_day, order_body, register, wait_final, wait_until

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana" / "railbook.json"
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$")


async def _samples(client: httpx.AsyncClient) -> dict[str, float]:
    """Every sample of /metrics, keyed by name and labels as written."""
    r = await client.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    samples = {}
    for line in r.text.splitlines():
        match = SAMPLE.match(line)
        if match:
            samples[match.group(1) + (match.group(2) or "")] = float(match.group(3))
    return samples


def metric_names(text: str) -> set[str]:
    """The sample names of an exposition."""
    return {line.split("{", 1)[0].split(" ", 1)[0] for line in text.splitlines() if line and line[0] != "#"}


def _orders(samples: dict[str, float], outcome: str) -> float:
    return samples.get(f'railbook_orders_total{{outcome="{outcome}"}}', 0.0)


async def test_business_figures_follow_the_orders(client: httpx.AsyncClient) -> None:
    day = await make_train_day(client, await admin(client), rows=1)  # 5 second-class seats
    m = await register(client)
    passengers = [await add_passenger(client, m["headers"]) for _ in range(6)]
    before = await _samples(client)
    for name in ("railbook_order_queue_depth", "railbook_commit_lag_seconds", "railbook_waitlist_waiting"):
        assert name in before, name
    for outcome in ("accepted", "sold_out", "refused", "committed", "failed"):
        assert f'railbook_orders_total{{outcome="{outcome}"}}' in before, outcome

    r = await client.post("/api/v1/orders", json=order_body(day, passengers[:5]), headers=m["headers"])
    assert r.status_code == 202, r.text
    order = await wait_final(client, m["headers"], r.json()["order_id"])
    assert order["status"] == "SUCCESS"
    other = await register(client)
    extra = await add_passenger(client, other["headers"])
    sold_out = await client.post("/api/v1/orders", json=order_body(day, [extra]), headers=other["headers"])
    assert_error_shape(sold_out, 409, "SOLD_OUT")
    refused = await client.post(
        "/api/v1/orders", json=order_body(day, [passengers[5]] * 2), headers=m["headers"]
    )
    assert_error_shape(refused, 422)

    async def counted() -> dict[str, float] | None:
        after = await _samples(client)
        return after if _orders(after, "committed") >= _orders(before, "committed") + 1 else None

    after = await wait_until(counted, what="the commit to be counted")
    assert _orders(after, "accepted") >= _orders(before, "accepted") + 1
    assert _orders(after, "sold_out") >= _orders(before, "sold_out") + 1
    assert _orders(after, "refused") >= _orders(before, "refused") + 1
    assert after["railbook_tickets_sold_total"] >= before.get("railbook_tickets_sold_total", 0) + 5
    count = "railbook_order_accept_to_commit_seconds_count"
    assert after[count] >= before.get(count, 0) + 1
    assert after["railbook_order_queue_depth"] >= 0 and after["railbook_commit_lag_seconds"] >= 0


@pytest.mark.parametrize(("app", "in_redis"), [("pg_client", "ok"), ("sqlite_client", "embedded")])
async def test_readiness_names_each_dependency(
    request: pytest.FixtureRequest, app: str, in_redis: str
) -> None:
    client: httpx.AsyncClient = request.getfixturevalue(app)
    r = await client.get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json()["checks"] == {"database": "ok", "cache": in_redis, "queue": in_redis}


async def test_the_dashboard_queries_only_exported_metrics(client: httpx.AsyncClient) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    queried = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            queried |= set(re.findall(r"\brailbook_[a-z0-9_]+", target["expr"]))
    assert {
        "railbook_orders_total",
        "railbook_tickets_sold_total",
        "railbook_order_queue_depth",
        "railbook_commit_lag_seconds",
        "railbook_waitlist_waiting",
        "railbook_order_accept_to_commit_seconds_bucket",
        "railbook_http_requests_total",
        "railbook_http_request_seconds_bucket",
    } <= queried
    await client.get("/healthz")  # at least one request counted
    exported = metric_names((await client.get("/metrics")).text)
    assert queried <= exported, queried - exported


COUNT_IN_A_PROCESS = """
import sys
from railbook.metrics import count_order
for _ in range(int(sys.argv[1])):
    count_order(sys.argv[2])
"""
READ_IN_A_PROCESS = """
from railbook.metrics import counted_text
print(counted_text().decode())
"""


def test_processes_sharing_a_directory_are_summed(tmp_path: Path) -> None:
    """As distributed serve runs them: figures counted in one process (the committer, say) are in the
    /metrics answer of another (an API process)."""
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PYTHONPATH": ":".join(sys.path)}

    def run(code: str, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-c", code, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return done.stdout

    run(COUNT_IN_A_PROCESS, "3", "committed")
    run(COUNT_IN_A_PROCESS, "2", "committed")
    run(COUNT_IN_A_PROCESS, "1", "accepted")
    text = run(READ_IN_A_PROCESS)
    assert 'railbook_orders_total{outcome="committed"} 5.0' in text, text
    assert 'railbook_orders_total{outcome="accepted"} 1.0' in text, text


def test_serve_gives_its_processes_one_directory_of_samples(tmp_path: Path) -> None:
    """A previous run's sample files are removed (nothing else there), and an operator's
    PROMETHEUS_MULTIPROC_DIR is kept as it is."""
    (tmp_path / "counter_4242.db").write_bytes(b"old")
    (tmp_path / "notes.txt").write_text("kept")
    saved = os.environ.pop(MULTIPROC_ENV, None)
    try:
        assert share_between_processes(tmp_path) == tmp_path
        assert os.environ[MULTIPROC_ENV] == str(tmp_path)
        assert not (tmp_path / "counter_4242.db").exists() and (tmp_path / "notes.txt").exists()
        os.environ[MULTIPROC_ENV] = str(tmp_path / "operator")
        assert share_between_processes(tmp_path) == tmp_path / "operator"
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        if saved is not None:
            os.environ[MULTIPROC_ENV] = saved
