"""The figures of a flash-sale run, computed from what the clients saw and what the database sampled.

Times are wall-clock seconds from the crowd's start (the first passenger may arrive then). Rates are
given as a mean over the stretch they belong to and as the best single second.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from rich.table import Table

from railbook.bench.crowd import Tally
from railbook.bench.usage import by_role


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile (nearest rank) of ``values``; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def per_second(times: list[float], start: float, weights: list[int] | None = None) -> list[int]:
    """Counts (or summed weights) per whole second after ``start``."""
    if not times:
        return []
    out = [0] * (int(max(times) - start) + 1)
    for k, t in enumerate(times):
        out[max(0, int(t - start))] += weights[k] if weights else 1
    return out


def _rate(total: float, seconds: float) -> float:
    return total / seconds if seconds > 0 else math.nan


def compute(
    crowd: Tally,
    hello: Tally,
    samples: list[tuple[float, int, int]],
    cpu: dict[str, float],
    load_cpu: float,
    start: float,
    sale_cpu: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Every figure of a run as plain numbers (the JSON result and the table are made from this).
    ``cpu``: each process group's CPU seconds over the crowd, its logins included; ``sale_cpu`` (default
    the same): from the sale's start, what the per-order and per-ticket figures by role come from."""
    roles = by_role(cpu if sale_cpu is None else sale_cpu)
    accepted = [o for o in crowd.orders]
    accepted_at = [o["accepted_at"] for o in accepted]
    known_at = [o["known_at"] for o in accepted]
    success = [o for o in accepted if o["status"] == "SUCCESS"]
    last_answer = crowd.last_answer_at
    post_all = [p[1] * 1000 for p in crowd.posts]
    post_202 = [p[1] * 1000 for p in crowd.posts if p[2] == "202"]
    path = [(o["known_at"] - o["started_at"]) * 1000 for o in accepted]
    to_known = [(o["known_at"] - o["accepted_at"]) for o in accepted]
    outcomes: dict[str, int] = {}
    for p in crowd.posts:
        outcomes[p[2]] = outcomes.get(p[2], 0) + 1
    statuses: dict[str, int] = {}
    for o in accepted:
        statuses[o["status"]] = statuses.get(o["status"], 0) + 1
    # Commit side: the database's counts sampled during the run.
    t_end = max([last_answer, *known_at]) if known_at else last_answer
    committed_tickets = samples[-1][2] if samples else 0
    commit_done = next((t for t, _, n in samples if n >= committed_tickets), t_end)
    committed_series = _sampled_per_second(samples, start, 2)
    hello_s = hello.hello_window[1] - hello.hello_window[0]
    hello_rate = _rate(len(hello.hello), hello_s)
    crowd_s = last_answer - start
    accepted_series = per_second(accepted_at, start)
    seen_tickets = per_second([o["known_at"] for o in success], start, [o["tickets"] for o in success])
    figures = {
        "crowd_seconds": crowd_s,
        "login_seconds": crowd.login_s,
        "orders_posted": len(crowd.posts),
        "outcomes": outcomes,
        "final_statuses": statuses,
        "accepted_per_s": _rate(len(accepted), crowd_s),
        "accepted_per_s_peak": max(accepted_series, default=0),
        "committed_tickets": committed_tickets,
        "committed_tickets_per_s": _rate(committed_tickets, commit_done - start),
        "committed_tickets_per_s_peak": max(committed_series, default=0),
        "tickets_seen": sum(o["tickets"] for o in success),
        "tickets_seen_per_s": _rate(sum(o["tickets"] for o in success), max(known_at, default=start) - start),
        "tickets_seen_per_s_peak": max(seen_tickets, default=0),
        "last_answer_to_all_known_s": max(0.0, max(known_at, default=last_answer) - last_answer),
        "post_orders_ms": {"p50": pct(post_all, 0.5), "mean": mean(post_all), "p99": pct(post_all, 0.99)},
        "post_orders_202_ms": {"p50": pct(post_202, 0.5), "mean": mean(post_202), "p99": pct(post_202, 0.99)},
        "whole_path_ms": {"p50": pct(path, 0.5), "mean": mean(path), "p99": pct(path, 0.99)},
        "time_to_known_s": {"p50": pct(to_known, 0.5), "mean": mean(to_known), "p99": pct(to_known, 0.99)},
        "healthz_per_s": hello_rate,
        "healthz_ms": {
            "p50": pct([h * 1000 for h in hello.hello], 0.5),
            "p99": pct([h * 1000 for h in hello.hello], 0.99),
        },
        "accepted_per_s_over_healthz": _rate(len(accepted), crowd_s) / hello_rate if hello_rate else math.nan,
        "cpu_seconds": cpu,
        "cpu_seconds_from_sale_by_role": roles,
        # Everything a role did from the sale's start (searches, polls, pays, refusals and retries
        # included) per order accepted and per ticket committed: what capacity is planned from.
        "cpu_ms_per_order_by_role": {
            k: 1000 * v / len(accepted) if accepted else math.nan for k, v in roles.items()
        },
        "cpu_ms_per_ticket_by_role": {
            k: 1000 * v / committed_tickets if committed_tickets else math.nan for k, v in roles.items()
        },
        "cpu_share_of_one_core": {k: v / (t_end - start) for k, v in cpu.items()} if t_end > start else {},
        "load_cpu_seconds": load_cpu,
        "shed_answers_retried": crowd.sheds,
        "route_ms": {
            route: {"n": len(v), "p50": pct(v, 0.5), "mean": mean(v), "p99": pct(v, 0.99)}
            for route, v in sorted(crowd.route_ms.items())
        },
        "load_pool_wait_ms": {
            "p50": pct(crowd.pool_wait_ms, 0.5),
            "mean": mean(crowd.pool_wait_ms),
            "p99": pct(crowd.pool_wait_ms, 0.99),
        },
        "series": {
            "accepted": accepted_series,
            "committed_tickets": committed_series,
            "tickets_seen": seen_tickets,
            "queue": [(t - start, n) for t, n in _queue(accepted_at, samples)],
            "post_ms_by_second": _latency_by_second(crowd, start),
            "time_to_known_s": to_known,
        },
    }
    return figures


def _sampled_per_second(samples: list[tuple[float, int, int]], start: float, column: int) -> list[int]:
    """Per-second increments of a sampled cumulative count (the last sample at or before each second)."""
    if not samples:
        return []
    seconds = int(samples[-1][0] - start) + 1
    out: list[int] = []
    k, last = 0, int(samples[0][column])
    base = last
    for s in range(1, seconds + 1):
        while k < len(samples) and samples[k][0] <= start + s:
            last = int(samples[k][column])
            k += 1
        out.append(last - base)
        base = last
    return out


def _queue(accepted_at: list[float], samples: list[tuple[float, int, int]]) -> list[tuple[float, int]]:
    """Accepted orders not yet committed, at each database sample."""
    ordered = sorted(accepted_at)
    out, k = [], 0
    for t, orders, _ in samples:
        while k < len(ordered) and ordered[k] <= t:
            k += 1
        out.append((t, max(0, k - orders)))
    return out


def _latency_by_second(crowd: Tally, start: float) -> list[tuple[int, float, float, float]]:
    """(second, p50, p90, p99) of POST /orders by the second it was sent."""
    by: dict[int, list[float]] = {}
    for sent, took, _ in crowd.posts:
        by.setdefault(int(sent - start), []).append(took * 1000)
    return [(s, pct(v, 0.5), pct(v, 0.9), pct(v, 0.99)) for s, v in sorted(by.items())]


ROWS: tuple[tuple[str, Callable[[dict[str, Any]], str]], ...] = (
    (
        "accepted orders/s (mean over the crowd / best second)",
        lambda f: f"{f['accepted_per_s']:,.0f} / {f['accepted_per_s_peak']:,}",
    ),
    (
        "committed tickets/s, database (mean / best second)",
        lambda f: f"{f['committed_tickets_per_s']:,.0f} / {f['committed_tickets_per_s_peak']:,}",
    ),
    (
        "tickets/s as passengers see them (mean / best second)",
        lambda f: f"{f['tickets_seen_per_s']:,.0f} / {f['tickets_seen_per_s_peak']:,}",
    ),
    (
        "crowd's last answer → every passenger saw a final status, s",
        lambda f: f"{f['last_answer_to_all_known_s']:.2f}",
    ),
    ("POST /orders ms, all answers (p50 / mean / p99)", lambda f: _trio(f["post_orders_ms"])),
    ("POST /orders ms, 202 only (p50 / mean / p99)", lambda f: _trio(f["post_orders_202_ms"])),
    ("whole path ms: search → final status seen (p50 / mean / p99)", lambda f: _trio(f["whole_path_ms"])),
    ("GET /healthz req/s (same server, same load)", lambda f: f"{f['healthz_per_s']:,.0f}"),
    ("accepted orders/s ÷ healthz req/s", lambda f: f"{f['accepted_per_s_over_healthz']:.4f}"),
    (
        "orders posted; accepted → final statuses",
        lambda f: f"{f['orders_posted']:,}; {_dict(f['final_statuses'])}",
    ),
    ("refusals", lambda f: _dict({k: v for k, v in f["outcomes"].items() if k != "202"})),
    (
        "tickets committed (database) / seen by passengers",
        lambda f: f"{f['committed_tickets']:,} / {f['tickets_seen']:,}",
    ),
    ("crowd duration (first arrival → last POST answer), s", lambda f: f"{f['crowd_seconds']:.1f}"),
    ("logging the crowd in before the sale, s", lambda f: f"{f.get('login_seconds', 0.0):.1f}"),
    ("CPU s over the crowd (% of one core)", lambda f: _cpu(f)),
    ("CPU ms per accepted order / per committed ticket, by role", lambda f: _per_role(f)),
    ("Redis µs per accepted order: all commands / scripts", lambda f: _redis(f.get("redis_time", {}))),
    ("429/503 answers retried after Retry-After", lambda f: _dict(f.get("shed_answers_retried", {}))),
    ("load generator CPU s (all load processes)", lambda f: f"{f['load_cpu_seconds']:.1f}"),
    (
        "load generator: wait for a free connection ms (p50 / mean / p99)",
        lambda f: _trio(f["load_pool_wait_ms"]) if "load_pool_wait_ms" in f else "-",
    ),
    ("ms per answer by route (n: p50 / mean / p99)", lambda f: _routes(f.get("route_ms", {}))),
)


def _verdict(check: dict[str, Any] | None) -> str:
    if check is None:
        return "n/a"
    return "[green]ok[/green]" if check["ok"] else "[red]FAILED[/red]"


def _trio(d: dict[str, float]) -> str:
    return f"{d['p50']:,.1f} / {d['mean']:,.1f} / {d['p99']:,.1f}"


def _routes(routes: dict[str, dict[str, float]]) -> str:
    return "\n".join(f"{route} ({int(v['n']):,}): {_trio(v)}" for route, v in routes.items()) or "-"


def _dict(d: dict[str, int]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in sorted(d.items())) or "-"


def _per_role(f: dict[str, Any]) -> str:
    orders, tickets = f.get("cpu_ms_per_order_by_role", {}), f.get("cpu_ms_per_ticket_by_role", {})
    return "\n".join(f"{k}: {v:.2f} / {tickets.get(k, math.nan):.2f}" for k, v in orders.items()) or "-"


def _redis(t: dict[str, Any]) -> str:
    if not t:
        return "-"
    return f"{t['usec_per_order']:,.0f} / {t['script_usec_per_order']:,.0f}"


def _cpu(f: dict[str, Any]) -> str:
    share = f["cpu_share_of_one_core"]
    # Helper processes that did nothing (uvicorn's multiprocessing resource tracker) are left out.
    used = {k: v for k, v in f["cpu_seconds"].items() if v >= 0.05}
    return "\n".join(f"{k}: {v:.1f} ({share.get(k, 0):.0%})" for k, v in used.items())


def table(results: dict[str, dict[str, Any]], title: str) -> Table:
    """Side by side: one column per design."""
    out = Table(title=title, show_lines=True)
    out.add_column("figure")
    for design in results:
        out.add_column(design, justify="right")
    for label, show in ROWS:
        out.add_row(label, *(show(r["figures"]) for r in results.values()))
    audit_names = sorted({k for r in results.values() for k in r.get("audit", {})})
    for name in audit_names:
        out.add_row(
            f"audit: {name}",
            *(_verdict(r["audit"].get(name)) for r in results.values()),
        )
    return out
