"""``railbook bench orders``: orders accepted/s and committed/s, acceptance latency, and the time the
queue takes to commit after the crowd stops, beside hello-world requests/s of the same server.

With no ``--url`` it starts a real server (uvicorn subprocess on a scratch PostgreSQL database and
a Redis database of its own, rate limits off) plus one ``railbook worker`` subprocess.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

console = Console()

PG_ADMIN = os.environ.get("RAILBOOK_BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS = os.environ.get("RAILBOOK_BENCH_REDIS", "redis://127.0.0.1:6379/6")
ADMIN_MOBILE = "13800000009"
ADMIN_PASSWORD = "bench-admin-secret"
TRAINS = 20
STOPS = 5
MEMBERS = 200
PASSENGERS_PER_MEMBER = 13


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    codes: dict[str, int] = field(default_factory=dict)

    def add(self, code: str, seconds: float) -> None:
        self.codes[code] = self.codes.get(code, 0) + 1
        self.latencies.append(seconds)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _local_stack() -> Iterator[tuple[str, str]]:
    """Scratch PostgreSQL database + Redis db, an API server and a worker; yields (url, database url)."""
    import psycopg
    import redis

    from railbook.adapters.db.migrate import upgrade

    name = f"railbook_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    db_url = f"{PG_ADMIN.rsplit('/', 1)[0].replace('postgresql://', 'postgresql+asyncpg://')}/{name}"
    r = redis.Redis.from_url(REDIS)
    r.flushdb()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        upgrade(db_url)
        port = _free_port()
        env = {
            **os.environ,
            "RAILBOOK_DATABASE_URL": db_url,
            "RAILBOOK_REDIS_URL": REDIS,
            "RAILBOOK_RATE_LIMITS": "off",
            "RAILBOOK_ADMIN_MOBILE": ADMIN_MOBILE,
            "RAILBOOK_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "RAILBOOK_JWT_SECRET": "bench-" + "x" * 40,
            "RAILBOOK_ARGON2_TIME_COST": "1",
            "RAILBOOK_ARGON2_MEMORY_COST": "1024",
            "RAILBOOK_SALE_TOKENS_PER_TRAIN_DAY": "100000",
            "RAILBOOK_LOAD_SAMPLE_DATA": "false",
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "railbook.cli", "api", "--port", str(port)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "railbook.cli", "worker", "--name", "bench-worker"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        url = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        else:
            raise RuntimeError("the server did not start")
        yield url, db_url
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        r.flushdb()
        r.close()
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _post(
    client: httpx.AsyncClient, path: str, body: Any, headers: dict[str, str] | None = None
) -> Any:
    """POST, retrying while the server sheds load (503/429 during the set-up's login storm)."""
    for _ in range(200):
        r = await client.post(path, json=body, headers=headers)
        if r.status_code not in (429, 503):
            r.raise_for_status()
            return r.json()
        await asyncio.sleep(0.05)
    r.raise_for_status()
    return r.json()


async def _prepare(
    client: httpx.AsyncClient,
) -> tuple[list[dict[str, Any]], list[tuple[dict[str, str], int]]]:
    """Trains on sale (20 carriages x 20 rows of second class each) and members with passengers."""
    from railbook.domain.identity import compose_id_card

    r = await client.post("/api/v1/auth/login", json={"mobile": ADMIN_MOBILE, "password": ADMIN_PASSWORD})
    r.raise_for_status()
    admin = {"Authorization": f"Bearer {r.json()['access_token']}"}
    tag = uuid.uuid4().int
    stations = []
    for k in range(STOPS):
        code = "".join(chr(65 + (tag // 26 ** (3 * k + d)) % 26) for d in range(3))
        name = f"测{code}{k}"
        r = await client.post("/api/v1/admin/stations", json={"name": name, "code": code}, headers=admin)
        r.raise_for_status()
        stations.append(name)
    date = (dt.date.today() + dt.timedelta(days=2)).isoformat()
    trains = []
    for t in range(TRAINS):
        code = f"G{7000 + t + tag % 2000}"
        spec = {
            "code": code,
            "kind": "G",
            "stops": [
                {
                    "station": s,
                    **({"arrives": f"{8 + k:02d}:00"} if k else {}),
                    **({"departs": f"{8 + k:02d}:05"} if k < STOPS - 1 else {}),
                    "km": 100 * k,
                }
                for k, s in enumerate(stations)
            ],
            "carriages": [{"carriage": c, "seat_class": "second", "rows": 20} for c in range(1, 21)],
        }
        r = await client.post("/api/v1/admin/trains", json=spec, headers=admin)
        r.raise_for_status()
        trains.append({"train_code": code, "date": date, "stations": stations})
    r = await client.post("/api/v1/admin/sales/open", json={"date": date}, headers=admin)
    r.raise_for_status()

    async def member(k: int) -> list[tuple[dict[str, str], int]]:
        mobile = f"15{tag % 10**6:06d}{k:03d}"
        await _post(
            client, "/api/v1/auth/register", {"mobile": mobile, "password": "bench-pass-1", "name": "测试"}
        )
        token = await _post(client, "/api/v1/auth/login", {"mobile": mobile, "password": "bench-pass-1"})
        headers = {"Authorization": f"Bearer {token['access_token']}"}
        out = []
        for j in range(PASSENGERS_PER_MEMBER):
            card = compose_id_card("110101", dt.date(1970 + j, 1 + k % 12, 1 + k % 28), k % 999 + 1)
            r = await client.post(
                "/api/v1/passengers", json={"name": "乘客", "id_card": card, "type": "adult"}, headers=headers
            )
            r.raise_for_status()
            out.append((headers, int(r.json()["passenger_id"])))
        return out

    riders: list[tuple[dict[str, str], int]] = []
    for chunk in range(0, MEMBERS, 20):
        for got in await asyncio.gather(*(member(k) for k in range(chunk, min(MEMBERS, chunk + 20)))):
            riders.extend(got)
    return trains, riders


async def _hello(client: httpx.AsyncClient, seconds: float, concurrency: int) -> float:
    count = 0
    stop = time.perf_counter() + seconds

    async def loop() -> None:
        nonlocal count
        while time.perf_counter() < stop:
            await client.get("/healthz")
            count += 1

    started = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(concurrency)))
    return count / (time.perf_counter() - started)


async def _crowd(
    client: httpx.AsyncClient,
    trains: list[dict[str, Any]],
    riders: list[tuple[dict[str, str], int]],
    seconds: float,
    concurrency: int,
) -> tuple[Tally, float, list[str]]:
    tally = Tally()
    accepted: list[str] = []
    # Each (train, passenger) pair once: one order per passenger per train-day (no duplicates).
    work = iter([(t, h, p) for t in trains for h, p in riders])
    seg = itertools.cycle(range(STOPS - 1))
    stop = time.perf_counter() + seconds

    async def loop() -> None:
        while time.perf_counter() < stop:
            try:
                train, headers, pid = next(work)
            except StopIteration:
                return
            k = next(seg)
            body = {
                "date": train["date"],
                "train_code": train["train_code"],
                "from": train["stations"][k],
                "to": train["stations"][k + 1],
                "passengers": [{"passenger_id": pid, "seat_class": "second"}],
            }
            t0 = time.perf_counter()
            r = await client.post("/api/v1/orders", json=body, headers=headers)
            elapsed = time.perf_counter() - t0
            if r.status_code == 202:
                accepted.append(r.json()["order_id"])
                tally.add("202", elapsed)
            else:
                code = r.json().get("error", {}).get("code", str(r.status_code))
                tally.add(f"{r.status_code} {code}", elapsed)

    started = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(concurrency)))
    return tally, time.perf_counter() - started, accepted


async def _committed(db_url: str, ids: list[str]) -> int:
    import psycopg

    dsn = db_url.replace("postgresql+asyncpg://", "postgresql://")
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cur = await conn.execute('SELECT count(*) FROM "order" WHERE status <> %s', ("PENDING",))
        row = await cur.fetchone()
        return int(row[0]) if row else 0


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _run(url: str, db_url: str | None, seconds: float, concurrency: int) -> None:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        console.print("preparing trains, members and passengers ...")
        trains, riders = await _prepare(client)
        hello = await _hello(client, min(seconds, 5.0), concurrency)
        tally, crowd_s, accepted = await _crowd(client, trains, riders, seconds, concurrency)
        crowd_end = time.perf_counter()
        drain_s = float("nan")
        committed = 0
        if db_url:
            for _ in range(1200):
                committed = await _committed(db_url, accepted)
                if committed >= len(accepted):
                    break
                await asyncio.sleep(0.05)
            drain_s = time.perf_counter() - crowd_end
    accepted_rate = len(accepted) / crowd_s
    table = Table(title=f"railbook bench orders — {seconds:.0f}s, concurrency {concurrency}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("hello world (GET /healthz) req/s", f"{hello:,.0f}")
    table.add_row("orders accepted/s (202)", f"{accepted_rate:,.0f}")
    table.add_row("accepted / hello", f"{accepted_rate / hello:.2f}" if hello else "-")
    table.add_row("orders accepted", f"{len(accepted):,}")
    for code, n in sorted(tally.codes.items()):
        table.add_row(f"  answers {code}", f"{n:,}")
    table.add_row(
        "acceptance p50 / p99 ms",
        f"{_pct(tally.latencies, 0.5) * 1000:.1f} / {_pct(tally.latencies, 0.99) * 1000:.1f}",
    )
    if db_url:
        table.add_row("committed", f"{committed:,}")
        table.add_row("committed/s (crowd start → queue drained)", f"{committed / (crowd_s + drain_s):,.0f}")
        table.add_row("queue drained after the crowd stopped, s", f"{drain_s:.2f}")
    console.print(table)


def run(url: str | None, seconds: float, concurrency: int) -> None:
    """Entry point of ``railbook bench orders``."""
    import logging

    logging.getLogger("httpx").setLevel(logging.WARNING)
    if url:
        asyncio.run(_run(url, os.environ.get("RAILBOOK_DATABASE_URL"), seconds, concurrency))
        return
    with _local_stack() as (local_url, db_url):
        asyncio.run(_run(local_url, db_url, seconds, concurrency))
