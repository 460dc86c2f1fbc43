"""The ``railbook bench`` commands (figures printed; never part of the test suite)."""

from __future__ import annotations

from pathlib import Path

import typer

bench_app = typer.Typer(
    help="Benchmarks (print figures; never part of the test suite).", no_args_is_help=True
)


@bench_app.command("allocator")
def bench_allocator(redis_url: str = typer.Option(None), seed: int = typer.Option(1)) -> None:
    """Allocations/s and server-side µs per call on a 30-stop, 1,200-seat train vs a trivial EVALSHA."""
    from railbook.bench.allocator import run
    from railbook.config import Settings

    run(redis_url or Settings().redis_url or "redis://127.0.0.1:6379/0", seed=seed)


@bench_app.command("orders")
def bench_orders(
    url: str = typer.Option(None, help="A running server; default: start one (PostgreSQL + Redis)."),
    seconds: float = typer.Option(10.0),
    concurrency: int = typer.Option(64),
    load_procs: int = typer.Option(2, help="Load-generating processes (apart from the server)."),
    members: int = typer.Option(4000, help="Members in the crowd (3 passengers each)."),
    seats: int = typer.Option(6000, help="Seats of the hot train-day (at most 40 carriages: 5,880)."),
    stops: int = typer.Option(8, help="Stops of the trains."),
) -> None:
    """A flash sale on one train-day: accepted/s and sold-out/s, committed/s, p50/p99, drain time,
    beside hello-world requests/s of the same single API process."""
    from railbook.bench.orders import run

    run(
        url=url,
        seconds=seconds,
        concurrency=concurrency,
        load_procs=load_procs,
        members=members,
        seats=seats,
        stops=stops,
    )


@bench_app.command("search")
def bench_search(
    url: str = typer.Option(None),
    seconds: float = typer.Option(10.0),
    concurrency: int = typer.Option(64),
) -> None:
    """Warm-cache search requests/s and p99 beside hello-world requests/s; cold-start time to full speed."""
    from railbook.bench.search import run

    run(url=url, seconds=seconds, concurrency=concurrency)


@bench_app.command("reads")
def bench_reads(
    members: int = typer.Option(600, help="Members whose orders are read back (five passengers each)."),
    seconds: float = typer.Option(10.0, help="Seconds of load per route, in interleaved slices."),
    load_procs: int = typer.Option(2, help="Load-generating processes."),
    connections: int = typer.Option(64, help="Keep-alive connections, over all load processes."),
    out: Path = typer.Option(None, help="Where to write reads.json (default: print only)."),
) -> None:
    """GET /orders/{id}, /orders, /tickets and /me req/s beside GET /healthz on one API process."""
    from railbook.bench.reads import run

    run(members=members, seconds=seconds, load_procs=load_procs, connections=connections, out=out)


@bench_app.command("flash-sale")
def bench_flash_sale(
    design: str = typer.Option("both", help="railbook, naive, or both (one after the other, one table)."),
    members: int = typer.Option(1500, help="Members in the crowd."),
    trains: int = typer.Option(4, help="Trains on sale that day."),
    stops: int = typer.Option(30, help="Stops of each train."),
    seats: int = typer.Option(1200, help="Seats of each train."),
    passengers: int = typer.Option(5, help="Passengers per member."),
    ramp: float = typer.Option(2.0, help="The crowd arrives within this many seconds."),
    api_workers: int = typer.Option(2, help="API processes of each design (of each API node for railbook)."),
    load_procs: int = typer.Option(2, help="Load-generating processes."),
    connections: int = typer.Option(
        0,
        help="Keep-alive connections, over all load processes; 0: one per member, as each passenger's "
        "own client holds its own (fewer make the load generator's queue part of what is measured).",
    ),
    hello_seconds: float = typer.Option(4.0, help="Seconds of GET /healthz before the crowd."),
    redis_db: int = typer.Option(3, help="Redis logical database (1-7) for railbook's run."),
    redis_primaries: int = typer.Option(
        0,
        min=0,
        help="railbook on a Redis Cluster of this many primaries started for the run (redis-server on "
        "loopback ports), its CPU and command time reported; 0: a logical database of the shared Redis.",
    ),
    api_nodes: int = typer.Option(
        1,
        min=1,
        help="railbook's API nodes: 'railbook api' processes on a port each, the crowd spread over them.",
    ),
    committers: int = typer.Option(1, min=1, help="railbook's committers: 'railbook worker' processes."),
    setting: list[str] = typer.Option(
        [],
        "--setting",
        help="A setting of railbook's processes, NAME=VALUE without the RAILBOOK_ prefix (e.g. "
        "MAX_IN_FLIGHT=0); may be given again.",
    ),
    out: Path = typer.Option(Path("bench-results"), help="Where the JSON result and the plots go."),
    plots: bool = typer.Option(True, help="Draw the PNG plots (needs matplotlib: the bench extra)."),
) -> None:
    """A 12306-class flash sale end to end over HTTP, railbook beside a naive design: throughput on
    both sides of the queue, what passengers see, latencies, CPU, and an audit of the result."""
    from railbook.bench.flash_sale import run
    from railbook.bench.scenario import Scenario

    if design not in ("railbook", "naive", "both"):
        raise typer.BadParameter("railbook, naive or both")
    designs = ["railbook", "naive"] if design == "both" else [design]
    settings = {}
    for item in setting:
        name, eq, value = item.partition("=")
        if not eq or not name:
            raise typer.BadParameter(f"{item!r} is not NAME=VALUE", param_hint="--setting")
        settings[f"RAILBOOK_{name.upper()}"] = value
    scenario = Scenario(
        members=members, trains=trains, stops=stops, seats=seats, passengers_per_member=passengers
    )
    results = run(
        designs,
        scenario,
        out,
        ramp=ramp,
        api_workers=api_workers,
        load_procs=load_procs,
        connections=connections or members,
        hello_seconds=hello_seconds,
        redis_db=redis_db,
        redis_primaries=redis_primaries,
        api_nodes=api_nodes,
        committers=committers,
        settings=settings,
        plots=plots,
    )
    if not all(check["ok"] for r in results.values() for check in r["audit"].values()):
        raise typer.Exit(1)
