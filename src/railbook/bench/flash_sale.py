"""``railbook bench flash-sale``: a 12306-class flash sale end to end, black-box over HTTP.

For each design asked (railbook in distributed mode, the naive design of :mod:`railbook.bench.naive`,
or both in one run): start the site, set the sale up through the API, measure ``GET /healthz``
with the same load processes, then let the crowd in (:mod:`railbook.bench.crowd`) under a live
display, wait until every accepted order is committed, audit (:mod:`railbook.bench.audit`), and
compute the figures. The results go to a JSON file and PNG plots, and a side-by-side table.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import threading
import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import asyncpg
from rich.console import Console
from rich.live import Live
from rich.table import Table

from railbook.bench import audit as audits
from railbook.bench import figures, usage
from railbook.bench import site as sites
from railbook.bench.crowd import spread
from railbook.bench.scenario import Scenario, prepare

console = Console(width=150)


class Monitor:
    """Samples the database's committed counts (and the CPU of the watched processes) every
    ``every_s`` in a thread of its own, until stopped."""

    def __init__(self, site: sites.Site, every_s: float = 0.25) -> None:
        self.site, self.every_s = site, every_s
        self.samples: list[tuple[float, int, int]] = []
        self.redis_lost = False  # set when the claimed Redis database stopped being ours
        self.pids: dict[str, list[int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        conn = await asyncpg.connect(self.site.dsn)
        try:
            while not self._stop.is_set():
                orders, tickets = await audits.committed(conn, self.site.design)
                self.samples.append((time.time(), orders, tickets))
                if len(self.samples) % 4 == 0 and not self.redis_lost:
                    self.redis_lost = not await asyncio.to_thread(self.site.redis_still_ours)
                await asyncio.sleep(self.every_s)
        finally:
            await conn.close()

    def __enter__(self) -> Monitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _live_table(design: str, counts: dict[str, int], monitor: Monitor, started: float) -> Table:
    table = Table(title=f"flash sale — {design} — {time.time() - started:5.1f} s", min_width=60)
    table.add_column("passengers")
    table.add_column("", justify="right")
    table.add_column("database")
    table.add_column("", justify="right")
    orders, tickets = monitor.samples[-1][1:] if monitor.samples else (0, 0)
    right = [
        ("orders committed", orders),
        ("tickets written", tickets),
        ("queue (accepted − committed)", max(0, counts.get("accepted", 0) - orders)),
    ]
    left = list(counts.items())
    for k in range(max(len(left), len(right))):
        a = left[k] if k < len(left) else ("", "")
        b = right[k] if k < len(right) else ("", "")
        table.add_row(
            str(a[0]), f"{a[1]:,}" if a[1] != "" else "", str(b[0]), f"{b[1]:,}" if b[1] != "" else ""
        )
    return table


def _start(design: str, options: dict[str, Any]) -> AbstractContextManager[sites.Site]:
    workers = options["api_workers"]
    if design == "naive":
        return sites.naive_site(api_workers=workers)
    return sites.railbook_site(
        api_workers=workers,
        redis_db=options["redis_db"],
        api_nodes=options.get("api_nodes", 1),
        committers=options.get("committers", 1),
        redis_primaries=options.get("redis_primaries", 0),
        extra_env=options.get("settings") or None,
    )


def run_design(design: str, scenario: Scenario, options: dict[str, Any]) -> dict[str, Any]:
    """One design end to end: its result (scenario, figures, audit)."""
    procs, conns = options["load_procs"], options["connections"]
    with _start(design, options) as site:
        console.rule(
            f"[bold]{design}[/bold] at {', '.join(site.urls or [site.url])} "
            f"({', '.join(f'{k} pid {v}' for k, v in site.pids.items())})"
        )
        plan = asyncio.run(prepare(site.url, scenario, say=console.print, nodes=site.urls or None))
        hello, _, _ = spread(
            "hello", plan, procs, {"seconds": options["hello_seconds"], "connections": conns}
        )
        console.print(f"  GET /healthz: {len(hello.hello) / options['hello_seconds']:,.0f} req/s")
        groups = usage.cpu_groups(site)
        with Monitor(site) as monitor:
            cpu0 = usage.cpu_by_pid(groups)
            redis0 = usage.command_stats(site.redis_nodes)
            t0 = time.time()
            with Live(console=console, refresh_per_second=4, transient=False) as live:
                sale: list[Any] = []  # (time, CPU by pid, Redis stats) once the crowd has logged in

                def tick(counts: dict[str, int], _pids: list[int]) -> None:
                    live.update(_live_table(design, counts, monitor, t0))
                    if not sale and counts.get("logins", 0) >= len(plan.riders):
                        sale.append(
                            (time.time(), usage.cpu_by_pid(groups), usage.command_stats(site.redis_nodes))
                        )

                crowd, start, _ = spread(
                    "crowd", plan, procs, {"connections": conns, "ramp": options["ramp"]}, on_tick=tick
                )
            accepted = len(crowd.orders)
            asyncio.run(audits.wait_final(site, accepted))
            time.sleep(0.5)  # one more sample after the last commit
            # Read again: backends opened during the run (a pool growing under the crowd) count too.
            groups = usage.merge(groups, usage.cpu_groups(site))
            cpu1 = usage.cpu_by_pid(groups)
            cpu = usage.cpu_used(groups, cpu0, cpu1)
            # Per order, the waiting room's logins left out: from the sale's start (the first display
            # tick once every member has logged in) when it was caught, else from before the logins.
            sale_at, sale_cpu0, sale_redis0 = sale[0] if sale else (t0, cpu0, redis0)
            sale_cpu = usage.cpu_used(groups, sale_cpu0, cpu1)
            redis_time = usage.redis_time(sale_redis0, usage.command_stats(site.redis_nodes), accepted)
        result: dict[str, Any] = {
            "design": design,
            "scenario": dataclasses.asdict(scenario),
            "options": options,
            "site": {"api_nodes": site.urls or [site.url], "redis_nodes": site.redis_nodes},
            "figures": figures.compute(crowd, hello, monitor.samples, cpu, crowd.cpu_s, start, sale_cpu),
        }
        result["figures"]["redis_time"] = redis_time
        result["figures"]["per_order_from_s"] = sale_at - start  # when the per-order readings began
        console.print("  auditing ...")
        result["audit"] = asyncio.run(audits.audit(site, plan, crowd))
        if site.redis_owner is not None:
            # Another client flushing the claimed database mid-run loses railbook's Redis state
            # and makes every figure of the run meaningless.
            kept = not monitor.redis_lost and site.redis_still_ours()
            result["audit"]["Redis database stayed ours"] = {"ok": kept, "database": site.redis_url}
    return result


def _clean(value: Any) -> Any:
    """JSON without NaN (null instead)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def run(designs: list[str], scenario: Scenario, out: Path, **options: Any) -> dict[str, dict[str, Any]]:
    """Entry point of ``railbook bench flash-sale``: every design in turn, then the table, the JSON
    result and the plots. Returns the results by design."""
    import os

    results = {design: run_design(design, scenario, options) for design in designs}
    title = (
        f"flash sale: {scenario.members:,} members × {scenario.trains} trains of {scenario.stops} stops × "
        f"{scenario.seats:,} seats; {options['api_workers']} API processes per design; "
        f"{options['load_procs']} load processes; {os.cpu_count()} CPUs"
    )
    if "railbook" in designs:
        title += (
            f"; railbook: {options.get('api_nodes', 1)} API node(s) × {options['api_workers']}, "
            f"{options.get('committers', 1)} committer(s), Redis "
            + (
                f"Cluster of {options['redis_primaries']} primaries"
                if options.get("redis_primaries")
                else "shared"
            )
        )
        if options.get("settings"):
            title += "; " + ", ".join(
                f"{k.removeprefix('RAILBOOK_')}={v}" for k, v in options["settings"].items()
            )
    console.print(figures.table(results, title))
    for design, result in results.items():
        for name, check in result["audit"].items():
            if not check["ok"]:
                console.print(f"[red]{design} audit failed: {name}: {check}[/red]")
    out.mkdir(parents=True, exist_ok=True)
    path = out / "flash-sale.json"
    path.write_text(json.dumps(_clean(results), indent=1, ensure_ascii=False))
    console.print(f"result: {path}")
    if options.get("plots", True):
        from railbook.bench.plots import draw

        for png in draw(results, out):
            console.print(f"plot: {png}")
    return results
