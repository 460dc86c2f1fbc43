"""The ``railbook`` command. Typer has no async commands: each wraps a coroutine in ``asyncio.run``."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console

from railbook.bench.cli import bench_app
from railbook.config import Settings
from railbook.logs import configure_logging

app = typer.Typer(
    help="railbook: railway ticketing in the style of China Railway 12306.", no_args_is_help=True
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
timetable_app = typer.Typer(help="The timetable catalog.", no_args_is_help=True)
sales_app = typer.Typer(help="Sale days.", no_args_is_help=True)
inventory_app = typer.Typer(help="Seat inventory in the allocator.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(timetable_app, name="timetable")
app.add_typer(sales_app, name="sales")
app.add_typer(inventory_app, name="inventory")
app.add_typer(bench_app, name="bench")  # the bench commands live with the benches

console = Console()
errors = Console(stderr=True)
T = TypeVar("T")


def _refuse(message: str) -> NoReturn:
    """One line on stderr and exit status 1: a refusal is not a crash, so no traceback."""
    errors.print(f"railbook: {message}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def _need_redis(role: str, settings: Settings) -> None:
    """The separate roles share the order stream through Redis; in the embedded mode their in-process
    queue would be one no other process reads (orders accepted and never committed)."""
    if settings.embedded:
        _refuse(
            f"'railbook {role}' needs RAILBOOK_REDIS_URL (the distributed mode); "
            "without Redis run 'railbook serve', which runs every role in one process."
        )


def _with_container(fn: Callable[[Any], Awaitable[T]], settings: Settings | None = None) -> T:
    """Build the container, run ``fn(container)``, close it."""
    from railbook.bootstrap import build_container

    async def runner() -> T:
        container = await build_container(settings or Settings())
        try:
            return await fn(container)
        finally:
            await container.close()

    return _run(runner())


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on uvloop where it is installed (it comes with uvicorn[standard], which the
    API server uses too): the worker's many small socket writes cost about half as much there."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - platforms without uvloop
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def _migrate(settings: Settings) -> None:
    from railbook.adapters.db.migrate import upgrade

    upgrade(settings.database_url)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Run the migrations up to the newest schema."""
    settings = Settings()
    _migrate(settings)
    console.print(f"[green]schema up to date[/green] ({settings.database_url.split('@')[-1]})")


@app.command()
def serve(
    host: str = typer.Option(None, help="Bind address (default RAILBOOK_HOST or 127.0.0.1)."),
    port: int = typer.Option(None, help="Port (default RAILBOOK_PORT or 8000)."),
    workers: int = typer.Option(
        None,
        min=1,
        help="API processes in distributed mode (default RAILBOOK_WORKERS, else one per core).",
    ),
    sample: bool = typer.Option(True, help="Load the sample timetable into an empty database."),
) -> None:
    """Run the whole system. Embedded mode: one process (API, order committer, scheduler).
    Distributed mode (RAILBOOK_REDIS_URL set): one API process per core, and one below the API's CPU
    priority for the order committer, scheduler, expiry and outbox relay; SIGTERM or Ctrl-C drains all."""
    import uvicorn

    settings = Settings()
    host = host or settings.host
    port = port or settings.port
    _migrate(settings)

    async def prepare(container: Any) -> dict[str, Any]:
        from railbook.services.catalog.site import prepare_site

        result: dict[str, Any] = await prepare_site(
            container, load_sample=sample and settings.load_sample_data
        )
        return result

    info = _with_container(prepare, settings)
    console.print(f"[bold green]railbook[/bold green] on http://{host}:{port}/  (API docs: /docs)")
    for line in info.get("lines", []):
        console.print(line)
    if not settings.embedded:
        n = workers or settings.workers or os.cpu_count() or 1
        console.print(f"{n} API process(es) and one for the order committer and scheduler")
        raise typer.Exit(_serve_processes(settings, host, port, n))
    uvicorn.run(
        "railbook.api.asgi:serve_app",
        factory=True,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
    )


def _serve_processes(settings: Settings, host: str, port: int, api_processes: int) -> int:
    """Distributed ``serve``: the API processes share one listening socket, bound here; the background
    roles run in a process of their own. Returns the exit status (see ``supervise``)."""
    import uvicorn

    from railbook.metrics import share_between_processes
    from railbook.workers.runtime import Child, supervise

    share_between_processes(settings.metrics_dir)  # before the children start: they inherit it
    grace = settings.shutdown_grace_seconds
    config = uvicorn.Config(
        # API only: the committer and the scheduler are the other process's (``api_app``, not ``serve_app``).
        "railbook.api.asgi:api_app",
        factory=True,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=grace,
    )
    sock = config.bind_socket()
    children = [Child(f"api-{k + 1}", _serve_http, (config, sock)) for k in range(api_processes)]
    children.append(Child("background", _serve_background))
    # Once every API process holds the socket the parent lets go of it: when they stop accepting, new
    # connections are refused at once instead of waiting in a backlog nobody reads. A child drains for
    # up to ``grace``; the parent waits a little longer before it kills what is left.
    return supervise(children, grace + 5.0, started=sock.close)


def _serve_http(config: Any, sock: Any) -> None:
    """An API process of distributed ``serve`` (uvicorn drains it on SIGTERM: stops accepting, finishes
    the requests in flight)."""
    import uvicorn

    config.configure_logging()  # a spawned process starts with Python's logging defaults
    uvicorn.Server(config).run(sockets=[sock])


def _serve_background(settings: Settings | None = None) -> None:
    """The committer process of distributed ``serve``: order committer, scheduler, expiry and outbox
    relay, below the API's CPU priority; on SIGTERM the committer acknowledges its batch and stops."""
    from railbook.workers.runtime import ALL_ROLES

    settings = settings or Settings()
    configure_logging(settings.log_level, json=settings.json_logs)
    _run_roles(settings, ALL_ROLES)


def _run_roles(settings: Settings, roles: tuple[str, ...], consumer: str | None = None) -> None:
    """Run background ``roles`` in this process, below the API's CPU priority, until SIGTERM or SIGINT;
    then the committer (if one of them) commits and acknowledges its batch, the others are cancelled,
    and the command returns (exit status 0)."""
    from railbook.workers.runtime import run_background_until_stopped

    async def work(container: Any) -> None:
        from railbook.bootstrap import freeze_startup_heap

        freeze_startup_heap()
        _lower_priority(container.settings)
        await run_background_until_stopped(
            container, container.settings.shutdown_grace_seconds, roles, consumer=consumer
        )

    _with_container(work, settings)


def _lower_priority(settings: Settings) -> None:
    """Run this process ``WORKER_NICE`` below the API's CPU priority."""
    if settings.worker_nice:
        # Below the accept path on a shared host: answering the crowd comes first, committing
        # (whose delay the order's PENDING state and queue position already show) after.
        os.nice(settings.worker_nice)


@app.command()
def api(
    host: str = typer.Option("127.0.0.1"),
    port: int = typer.Option(8000),
    workers: int = typer.Option(1),
) -> None:
    """Run only the stateless HTTP role (distributed mode; the worker and scheduler run apart)."""
    import uvicorn

    _need_redis("api", Settings())
    uvicorn.run(
        "railbook.api.asgi:api_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="warning",
        access_log=False,
    )


@app.command()
def worker(name: str = typer.Option(None, help="Consumer name (default: host-pid).")) -> None:
    """Consume the order stream: commit orders in batches, expire unpaid orders, relay the outbox.
    SIGTERM or Ctrl-C: the committer commits and acknowledges the batch it holds and the process exits;
    what it has not read stays in the stream for the other committers."""
    from railbook.workers.runtime import WORKER_ROLES

    settings = Settings()
    _need_redis("worker", settings)
    _run_roles(settings, WORKER_ROLES, consumer=name)


@app.command()
def scheduler() -> None:
    """Keep the next RAILBOOK_SALE_DAYS_AHEAD days open for sale and reconcile inventory (leader-locked).
    SIGTERM or Ctrl-C ends the round in progress and gives the leader lock up."""
    from railbook.workers.runtime import SCHEDULER_ROLES

    _run_roles(Settings(), SCHEDULER_ROLES)


@timetable_app.command("import")
def timetable_import(
    file: Path = typer.Argument(..., exists=True, readable=True, help="JSON or YAML timetable."),
) -> None:
    """Import stations and trains from a JSON/YAML file (idempotent: existing ones are replaced)."""
    import yaml

    from railbook.domain.errors import DomainError
    from railbook.services.catalog.imports import import_timetable_file

    try:
        result = _with_container(lambda c: import_timetable_file(c, file))
    except DomainError as exc:
        _refuse(f"{file}: {exc.message}")
    except (ValueError, KeyError, TypeError, yaml.YAMLError) as exc:  # not JSON / YAML, or not a timetable
        _refuse(f"{file}: not a readable timetable ({' '.join(str(exc).split())})")
    console.print(result)


@timetable_app.command("generate")
def timetable_generate(
    trains: int = typer.Option(500, help="How many trains."),
    out: Path = typer.Option(Path("network.json")),
    seed: int = typer.Option(7),
) -> None:
    """Write a synthetic network of N trains (for measuring how long opening a day takes)."""
    from railbook.services.catalog.sample import write_generated_network

    path = write_generated_network(out, trains=trains, seed=seed)
    console.print(f"wrote {path}")


@sales_app.command("open")
def sales_open(
    date: str = typer.Option(None, help="One day, YYYY-MM-DD."),
    days: int = typer.Option(None, help="The next N days from today (in Beijing)."),
) -> None:
    """Open sale days inside the sale window (the API's rule): copy the timetable into the per-day
    tables and load the allocator."""
    from railbook.domain.errors import DomainError
    from railbook.kit.clock import beijing_today
    from railbook.services.sales.opening import open_sale_days
    from railbook.services.sales.window import check_on_sale

    if (date is None) == (days is None):
        raise typer.BadParameter("give exactly one of --date or --days")
    if date is not None:
        try:
            dates = [dt.date.fromisoformat(date)]
        except ValueError:
            _refuse(f"--date {date!r} is not a date (YYYY-MM-DD)")
    else:
        first = beijing_today()
        dates = [first + dt.timedelta(days=i) for i in range(days)]
    settings = Settings()
    try:
        check_on_sale(settings, dates)
    except DomainError as exc:
        _refuse(exc.message)

    async def run(c: Any) -> Any:
        return await open_sale_days(c, dates)

    console.print(_with_container(run, settings))


@app.command("archive")
def archive(
    before: str = typer.Option(..., "--before", help="Archive the service dates before this (YYYY-MM-DD)."),
    out: Path = typer.Option(Path("archive"), "--out", help="Directory of the exported files."),
) -> None:
    """Detach, export (CSV, one directory per date) and drop the per-day partitions of past dates
    (PostgreSQL). Refuses while any of their orders is not final."""
    from sqlalchemy.exc import DBAPIError

    from railbook.adapters.db.archive import PgDayArchive
    from railbook.adapters.db.engine import make_engine
    from railbook.kit.clock import beijing_today
    from railbook.services.sales.archive import archive_before
    from railbook.services.sales.ports import ArchiveRefused

    try:
        day = dt.date.fromisoformat(before)
    except ValueError:
        _refuse(f"--before {before!r} is not a date (YYYY-MM-DD)")
    settings = Settings()
    engine = make_engine(settings.database_url, pool_size=1)
    if engine.dialect.name != "postgresql":
        _refuse("archive needs PostgreSQL (set RAILBOOK_DATABASE_URL); SQLite has no partitions")

    async def run() -> dict[dt.date, dict[str, int]]:
        try:
            return await archive_before(PgDayArchive(engine), before=day, out=out, today=beijing_today())
        finally:
            await engine.dispose()

    try:
        done = _run(run())
    except DBAPIError as exc:  # a lock not granted in time, the database gone: nothing half done
        reason = str(exc.orig).splitlines()[0].split("'>: ", 1)[-1]
        _refuse(f"archive stopped, run it again: {reason}")
    except ArchiveRefused as exc:
        for reason in exc.reasons:
            errors.print(f"railbook: {reason}", markup=False, highlight=False, soft_wrap=True)
        _refuse(f"archive refused ({len(exc.reasons)} reason(s) above)")
    if not done:
        console.print(f"nothing to archive before {day.isoformat()}", soft_wrap=True)
    for date, counts in done.items():
        rows = ", ".join(f"{table} {n}" for table, n in counts.items())
        where = out / date.isoformat()
        console.print(f"{date.isoformat()}: {rows} -> {where}", markup=False, highlight=False, soft_wrap=True)


@inventory_app.command("rebuild")
def inventory_rebuild(date: str = typer.Option(...), train: str = typer.Option(None)) -> None:
    """Rebuild the allocator's state of a day (or one train-day) from the system of record."""
    from railbook.services.sales.loading import rebuild_inventory

    n = _with_container(lambda c: rebuild_inventory(c, dt.date.fromisoformat(date), train))
    console.print(f"rebuilt {n} train-day(s)")


@inventory_app.command("check")
def inventory_check(
    date: str = typer.Option(None),
    train: str = typer.Option(None),
    repair: bool = typer.Option(
        False, "--repair", help="First mark held what active tickets hold and the allocator shows free."
    ),
) -> None:
    """Compare the allocator with the system of record; exits 1 on any drift."""
    from railbook.services.sales.inventory import check_inventory
    from railbook.services.sales.reconcile import reconcile_inventory

    day = dt.date.fromisoformat(date) if date else None

    async def run(c: Any) -> list[str]:
        if repair:
            for result in await reconcile_inventory(c, day, train):
                if result.repaired_seats:
                    console.print(
                        f"[yellow]{result.train_code} {result.date.isoformat()}: "
                        f"{result.repaired_seats} seat(s) repaired[/yellow]"
                    )
        return await check_inventory(c, day, train)

    drift = _with_container(run)
    for line in drift:
        console.print(f"[red]{line}[/red]")
    if drift:
        raise typer.Exit(1)
    console.print("[green]no drift[/green]")


def main() -> None:
    settings = Settings()
    configure_logging(settings.log_level, json=settings.json_logs)
    app()


if __name__ == "__main__":
    main()
