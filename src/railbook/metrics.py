"""Prometheus figures: the HTTP ones beside the business ones, and how /metrics gathers them when
several processes serve.

Counted where they happen, at the cost of one in-memory increment:
- ``railbook_http_requests_total{method,route,status}``, ``railbook_http_request_seconds`` (the guard);
- ``railbook_orders_total{outcome}``: ``accepted``, ``sold_out`` and ``refused`` (any other answer of
  the accept use case to a well-formed order of a logged-in member: a duplicate, a conflict, a limit,
  an outage) where ``POST /orders`` is answered (any API process); ``committed`` and ``failed`` where
  the committer writes a batch (the worker); ``railbook_tickets_sold_total`` (tickets of committed orders) and
  ``railbook_order_accept_to_commit_seconds`` (from the order's acceptance to its commit) there too.
  An order redelivered after a committer crash may be counted twice; nothing is ever counted less.

Read from the stores at scrape time, so they are right whichever process answers the scrape and
cost nothing on the order path:
- ``railbook_order_queue_depth``: accepted orders not yet committed (the order streams' entries not
  yet acknowledged by the committers in Redis; the in-process queue when embedded);
- ``railbook_commit_lag_seconds``: the age of the oldest of them (0 when the queue is empty);
- ``railbook_waitlist_waiting``: waitlist entries still waiting (the system of record).

Several processes: distributed ``railbook serve`` runs one API process per core and one for the
committer, and a scrape reaches any one of them. Each process's counters would be its own, so serve
runs them in prometheus-client's multiprocess mode: every process writes its samples to memory-mapped
files in one directory (``RAILBOOK_METRICS_DIR``, else a fresh temporary one; an operator's
``PROMETHEUS_MULTIPROC_DIR`` is kept), and /metrics sums the files of all of them. A single process
(embedded serve, one ``railbook api``) uses the ordinary in-memory registry. Processes started apart
(``railbook api --workers N``, ``railbook worker``) on one host share figures the same way when
``PROMETHEUS_MULTIPROC_DIR`` is set for all of them; on separate hosts each is scraped on its own
and the dashboards sum them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import structlog
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

if TYPE_CHECKING:
    from railbook.bootstrap import Container
    from railbook.services.booking.commit import CommitOutcome

log = structlog.get_logger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

HTTP_REQUESTS = Counter("railbook_http_requests_total", "HTTP requests", ["method", "route", "status"])
HTTP_LATENCY = Histogram(
    "railbook_http_request_seconds",
    "HTTP request latency",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)

ORDER_OUTCOMES = ("accepted", "sold_out", "refused", "committed", "failed")
ORDERS = Counter("railbook_orders_total", "Orders by outcome (see railbook.metrics)", ["outcome"])
_ORDER_COUNTERS = {outcome: ORDERS.labels(outcome) for outcome in ORDER_OUTCOMES}  # all shown from 0
TICKETS_SOLD = Counter("railbook_tickets_sold_total", "Tickets of committed orders")
ACCEPT_TO_COMMIT = Histogram(
    "railbook_order_accept_to_commit_seconds",
    "From an order's acceptance (202) to its commit in the system of record",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)


def count_order(outcome: str) -> None:
    """One answer of ``POST /orders`` (``accepted``, ``sold_out`` or ``refused``)."""
    _ORDER_COUNTERS[outcome].inc()


def count_commits(outcome: CommitOutcome, now: dt.datetime | None = None) -> None:
    """A committed batch: orders committed and failed, tickets sold, each order's time in the queue."""
    if outcome.committed:
        _ORDER_COUNTERS["committed"].inc(len(outcome.committed))
        TICKETS_SOLD.inc(sum(len(m.passengers) for m in outcome.committed))
        now = now or dt.datetime.now(dt.UTC)
        for m in outcome.committed:
            ACCEPT_TO_COMMIT.observe(max(0.0, (now - m.created_at).total_seconds()))
    if outcome.failed:
        _ORDER_COUNTERS["failed"].inc(len(outcome.failed))


def share_between_processes(directory: Path | None) -> Path:
    """Before the processes of ``serve`` start: their samples go to files in one directory (emptied of a
    previous run's), which /metrics sums. An operator's ``PROMETHEUS_MULTIPROC_DIR`` wins."""
    chosen = os.environ.get(MULTIPROC_ENV)
    if chosen:
        return Path(chosen)
    if directory is None:
        import tempfile

        directory = Path(tempfile.mkdtemp(prefix="railbook-metrics-"))
    else:
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):  # a previous run's samples (only those files)
            stale.unlink(missing_ok=True)
    os.environ[MULTIPROC_ENV] = str(directory)
    return directory


def counted_text() -> bytes:
    """The counters and histograms in the text format: every process's when they share a directory."""
    if not os.environ.get(MULTIPROC_ENV):
        return generate_latest(REGISTRY)
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


# ---- read at scrape time ------------------------------------------------------------------------

FIGURES_TIMEOUT_S = 2.0


class _Figures:
    """A collector of values read just before the scrape."""

    def __init__(self, metrics: Sequence[Metric]) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        yield from self.metrics


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


async def read_figures(container: Container) -> list[Metric]:
    """Queue depth, commit lag and waiting waitlist entries, read from the stores; a store that does
    not answer in time leaves its figures out of this scrape (logged), never the whole scrape."""
    metrics: list[Metric] = []
    try:
        depth, oldest = await asyncio.wait_for(_queue_figures(container), FIGURES_TIMEOUT_S)
        lag = max(0.0, time.time() - oldest) if oldest is not None else 0.0
        metrics.append(_gauge("railbook_order_queue_depth", "Accepted orders not yet committed", depth))
        metrics.append(_gauge("railbook_commit_lag_seconds", "Age of the oldest uncommitted order", lag))
    except Exception as exc:
        log.warning("metrics_queue_unavailable", error=repr(exc)[:200])
    try:
        from railbook.adapters.db.figures import waitlist_waiting

        waiting = await asyncio.wait_for(waitlist_waiting(container.sessionmaker), FIGURES_TIMEOUT_S)
        metrics.append(_gauge("railbook_waitlist_waiting", "Waitlist entries still waiting", waiting))
    except Exception as exc:
        log.warning("metrics_waitlist_unavailable", error=repr(exc)[:200])
    return metrics


async def _queue_figures(container: Container) -> tuple[int, float | None]:
    """(uncommitted orders, epoch seconds of the oldest one or None)."""
    if container.redis is not None:
        from railbook.adapters.redis.queue_figures import order_queue_figures

        return await order_queue_figures(container.redis)
    queue = container.queue
    if queue is None:
        return 0, None
    from railbook.services.booking.order_ids import order_id_time

    depth, oldest = queue.waiting()
    return depth, order_id_time(oldest).timestamp() if oldest is not None else None


async def exposition(container: Container | None) -> bytes:
    """The whole /metrics body: counted figures, then those read from the stores."""
    text = counted_text()
    if container is None:
        return text
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Figures(await read_figures(container)))
    return text + generate_latest(registry)


__all__ = [
    "ACCEPT_TO_COMMIT",
    "HTTP_LATENCY",
    "HTTP_REQUESTS",
    "ORDERS",
    "TICKETS_SOLD",
    "count_commits",
    "count_order",
    "exposition",
    "share_between_processes",
]
