"""``railbook serve`` in distributed mode (PostgreSQL + Redis) as a group of processes: one API process
per core and one for the order committer and scheduler, below the API's CPU priority. Orders placed
over HTTP are committed; SIGTERM mid-crowd drains every process and loses no accepted order; a child
that dies by itself stops the group with a non-zero exit; a parent killed outright takes its children."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import claimed_redis_db, fresh_pg_database
from tests.crowd import FINAL, Shopper, Tally, call, hot_day, server_env, shop
from tests.integration.test_faults import N_STOPS
from tests.live_server import free_port, log_tail
from tests.support import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

ROWS = 12  # one second-class carriage: 60 seats
SHOPPERS = 30
STOP_TIMEOUT_S = 60.0


class Serve:
    """``railbook serve`` on a fixed port, started again behind the same URL after it stopped."""

    def __init__(self, workdir: Path, settings: dict[str, str], *args: str) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RAILBOOK_")}
        self.env.update(settings)
        self.args = args
        self.log = workdir / "serve.log"
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self) -> None:
        railbook = Path(sys.executable).with_name("railbook")
        command = [str(railbook), "serve", "--host", "127.0.0.1", "--port", str(self.port), *self.args]
        with self.log.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                # A process group of its own, so Ctrl-C can be played to the whole group.
                *command,
                cwd=self.workdir,
                env=self.env,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        deadline = time.monotonic() + 120
        async with httpx.AsyncClient(timeout=1.0) as client:
            while True:
                assert self.proc.returncode is None, f"serve exited:\n{log_tail(self.log)}"
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{self.url}/healthz")).status_code == 200:
                        return
                assert time.monotonic() < deadline, f"serve not healthy:\n{log_tail(self.log)}"
                await asyncio.sleep(0.2)

    async def signal(self, sig: int) -> int:
        """Send ``sig`` to the parent and wait for its exit status."""
        assert self.proc is not None
        self.proc.send_signal(sig)
        return await self.wait()

    async def interrupt(self) -> int:
        """Ctrl-C in a terminal: SIGINT to the parent and every child at once; the exit status."""
        os.killpg(self.pid, signal.SIGINT)
        return await self.wait()

    async def wait(self) -> int:
        assert self.proc is not None
        try:
            return await asyncio.wait_for(self.proc.wait(), timeout=STOP_TIMEOUT_S)
        except TimeoutError:
            self.proc.kill()
            raise AssertionError(f"serve did not stop:\n{log_tail(self.log, 80)}") from None

    async def close(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(AssertionError):
                await self.signal(signal.SIGTERM)


def children(parent: int) -> dict[int, int]:
    """The processes ``serve`` spawned (not multiprocessing's resource tracker): pid → nice value."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes()
            if int(fields[1]) == parent and b"spawn_main" in cmdline:
                out[int(entry.name)] = int(fields[16])
    return out


def alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def nice_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


async def gone(pids: list[int], within_s: float = 10.0) -> bool:
    """Every one of ``pids`` has ended (no orphan left behind)."""
    deadline = time.monotonic() + within_s
    while any(alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.1)
    return True


@pytest.fixture
def stores() -> Iterator[dict[str, str]]:
    """A fresh database and a Redis logical database of this test's own."""
    with fresh_pg_database() as pg, claimed_redis_db(3) as redis_url:
        yield server_env(pg, redis_url, RAILBOOK_SALE_DAYS_AHEAD="2")


@contextlib.asynccontextmanager
async def running(
    tmp_path: Path, settings: dict[str, str], *args: str
) -> AsyncIterator[tuple[Serve, httpx.AsyncClient, dict[str, Any], list[Shopper]]]:
    """A started server, a client, a hot train-day and shoppers; the server is stopped afterwards."""
    serve = Serve(tmp_path, settings, *args)
    try:
        await serve.start()
        async with httpx.AsyncClient(base_url=serve.url, timeout=10.0) as client:
            database = settings["RAILBOOK_DATABASE_URL"]
            day, shoppers = await hot_day(client, database, rows=ROWS, stops=N_STOPS, shoppers=SHOPPERS)
            yield serve, client, day, shoppers
    finally:
        await serve.close()


def order_body(day: dict[str, Any], shopper: Shopper) -> dict[str, Any]:
    names = [name for name, _ in day["stations"]]
    return {
        "date": day["date"],
        "train_code": day["train_code"],
        "from": names[0],
        "to": names[-1],
        "passengers": [{"passenger_id": shopper.passengers[0], "seat_class": "second"}],
    }


async def finals(
    client: httpx.AsyncClient, tally: Tally, accepted: dict[str, dict[str, str]], within_s: float = 45.0
) -> Counter[str]:
    """Every accepted order reads back final within ``within_s``: how many ended in each state."""
    out: Counter[str] = Counter()
    open_ids = dict(accepted)
    deadline = time.monotonic() + within_s
    while open_ids:
        for order_id, headers in list(open_ids.items()):
            r = await call(client, tally, "GET", f"/api/v1/orders/{order_id}", headers=headers)
            if r is not None and r.status_code == 200 and r.json()["status"] in FINAL:
                out[r.json()["status"]] += 1
                del open_ids[order_id]
        assert not open_ids or time.monotonic() < deadline, f"{len(open_ids)} accepted orders not final"
        await asyncio.sleep(0.3)
    return out


async def test_one_api_process_per_core_and_a_committer_below_them(
    tmp_path: Path, stores: dict[str, str]
) -> None:
    """Default: os.cpu_count() API processes plus one committer process at WORKER_NICE below them;
    orders placed over HTTP are committed; an API process killed by itself stops the group (exit 1)."""
    async with running(tmp_path, stores) as (serve, client, day, shoppers):
        cores = os.cpu_count() or 1
        kids = children(serve.pid)
        assert len(kids) == cores + 1, kids
        base = nice_of(serve.pid)
        lowered = min(19, base + 10)
        assert sorted(kids.values()) == [base] * cores + [lowered], kids
        tally = Tally()
        accepted = {}
        for shopper in shoppers[:5]:
            r = await call(
                client,
                tally,
                "POST",
                "/api/v1/orders",
                json=order_body(day, shopper),
                headers=shopper.headers,
            )
            assert r is not None and r.status_code == 202, r and r.text
            accepted[r.json()["order_id"]] = shopper.headers
        assert await finals(client, tally, accepted) == Counter(SUCCESS=5)
        assert not tally.violations, tally.violations

        api_pid = next(pid for pid, nice in kids.items() if nice == base)
        os.kill(api_pid, signal.SIGKILL)
        assert await serve.wait() == 1
        assert await gone(list(kids)), "children left running after the group stopped"
        assert "serve_process_ended" in serve.log.read_text(errors="replace")


async def test_sigterm_mid_crowd_drains_every_process_and_loses_no_order(
    tmp_path: Path, stores: dict[str, str]
) -> None:
    """SIGTERM while a crowd orders: the parent exits 0 once every child drained, none is left; after a
    restart on the same stores every 202 order ends final, and none failed (nothing was lost). Then
    Ctrl-C (SIGINT to the whole process group) stops it cleanly too."""
    settings = dict(stores, RAILBOOK_WORKERS="2")
    async with running(tmp_path, settings) as (serve, client, day, shoppers):
        kids = children(serve.pid)
        assert len(kids) == 3, kids
        tally = Tally()
        stop = asyncio.Event()
        rng = random.Random(5)
        crowd = [
            asyncio.create_task(shop(client, s, day, stop, tally, random.Random(rng.random())))
            for s in shoppers
        ]
        try:
            await asyncio.sleep(3.0)
            before = len(tally.accepted)
            assert before > 0, f"nothing accepted:\n{log_tail(serve.log)}"
            assert await serve.signal(signal.SIGTERM) == 0, log_tail(serve.log, 80)
            assert await gone(list(kids)), "children left running after SIGTERM"
            log = serve.log.read_text(errors="replace")
            assert "serve_process_killed" not in log and "serve_process_failed" not in log, log_tail(
                serve.log
            )
            await serve.start()
            # The crowd comes back by itself: each shopper first follows its order placed before the
            # stop to its end (the restarted committer finishes it), then orders again.
            await wait_until(
                lambda: len(tally.accepted) > before,
                timeout=30.0,
                interval=0.2,
                what=f"an order accepted after the restart ({dict(tally.codes)}):\n{log_tail(serve.log)}",
            )
        finally:
            stop.set()
            await asyncio.gather(*crowd)
        assert len(tally.accepted) > before, "nothing accepted after the restart"
        ended = await finals(client, tally, tally.accepted)
        assert sum(ended.values()) == len(tally.accepted)
        assert "FAILURE" not in ended, ended
        assert not tally.violations, "\n".join(tally.violations[:20])
        assert 500 not in tally.statuses
        kids = children(serve.pid)
        assert await serve.interrupt() == 0, log_tail(serve.log, 80)
        assert await gone(list(kids)), "children left running after Ctrl-C"


async def test_processes_die_with_a_killed_parent(tmp_path: Path, stores: dict[str, str]) -> None:
    """kill -9 of the parent takes its processes along at once (no orphan keeps the port or commits)."""
    serve = Serve(tmp_path, dict(stores, RAILBOOK_WORKERS="1"))
    try:
        await serve.start()
        kids = children(serve.pid)
        assert len(kids) == 2, kids
        assert await serve.signal(signal.SIGKILL) == -signal.SIGKILL
        # At once once a child has set its death signal; a child still starting (a loaded machine)
        # sees its parent gone when it gets there. Without either it would live on for ever.
        assert await gone(list(kids), within_s=10.0), "children outlived their killed parent"
    finally:
        await serve.close()
