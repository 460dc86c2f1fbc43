"""The servers a bench runs against: railbook in distributed mode, or the naive design shipped here.

railbook: a scratch PostgreSQL database migrated with ``railbook db upgrade``, a Redis logical
database claimed for the run (or a scratch Redis Cluster of its own), ``railbook api --workers N`` on
one port or on several (API nodes), and one ``railbook worker`` or several (committers). The naive
design: a scratch database and ``python -m railbook.bench.naive`` (uvicorn, N workers). Everything
is started as a subprocess through documented commands and stopped, and the scratch stores dropped,
when the block ends.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import redis

from railbook.bench.redis_cluster import redis_cluster
from railbook.bench.wire import free_port

BENCH_DB_POOL_SIZE = 8
# The PostgreSQL connections railbook's processes may open in all (up to 4 × DB_POOL_SIZE per API
# process and 2 × per committer): more processes get smaller pools, so a run fits a stock server
# (max_connections 100) beside the naive design's 2 × 10 and the audit's few.
BENCH_DB_CONNECTIONS = 80
PG_ADMIN = os.environ.get("RAILBOOK_BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_BASE = os.environ.get("RAILBOOK_BENCH_REDIS", "redis://127.0.0.1:6379")
# The same owner key the test suite claims its logical databases with: a run never flushes a
# database another run (or a test session) holds.
REDIS_OWNER_KEY = "railbook:test:owner"
ADMIN_MOBILE = "13800000009"
ADMIN_PASSWORD = "bench-admin-secret"


@dataclass
class Site:
    """A running server: its URL, its database (asyncpg DSN), its Redis URL (railbook only), the
    processes whose CPU is reported, and the environment documented commands need to reach it."""

    design: str
    url: str
    dsn: str
    redis_url: str | None
    pids: dict[str, int] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    log: Any = None
    redis_owner: str | None = None  # the owner key's value while the Redis database is ours
    urls: list[str] = field(default_factory=list)  # every API node (``url`` is the first)
    redis_nodes: list[str] = field(default_factory=list)  # the primaries of a Redis Cluster of the run's own

    def redis_still_ours(self) -> bool:
        """Whether the claimed Redis database still carries our owner key (another client that
        flushed it mid-run would make the run meaningless)."""
        if self.redis_url is None or self.redis_owner is None:
            return True
        client = redis.Redis.from_url(self.redis_url)
        try:
            return client.get(REDIS_OWNER_KEY) == self.redis_owner.encode()
        finally:
            client.close()

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the servers' combined output (for a failed start)."""
        if self.log is None:
            return ""
        self.log.seek(0)
        text: str = self.log.read().decode(errors="replace")
        return text[-chars:]


def admin_sql(sql: str) -> None:
    """Run one statement on the PostgreSQL server's maintenance database (CREATE/DROP DATABASE)."""

    async def go() -> None:
        conn = await asyncpg.connect(PG_ADMIN)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(go())


@contextmanager
def scratch_database(prefix: str) -> Iterator[str]:
    """A new PostgreSQL database for the run (its DSN), dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin_sql(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_ADMIN.rsplit('/', 1)[0]}/{name}"
    finally:
        admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def claimed_redis(preferred: int) -> Iterator[tuple[str, str]]:
    """A Redis logical database 1..7 claimed for the run with the owner key (SET NX), flushed
    (that database only) before and after: its URL and the owner key's value."""
    token = f"bench-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    for number in [preferred, *[n for n in range(1, 8) if n != preferred]]:
        client = redis.Redis.from_url(f"{REDIS_BASE}/{number}")
        if client.set(REDIS_OWNER_KEY, token, nx=True, ex=3 * 3600):
            break
        client.close()
    else:
        raise RuntimeError("no free Redis logical database 1..7 for the bench")
    client.flushdb()
    client.set(REDIS_OWNER_KEY, token, ex=3 * 3600)
    try:
        yield f"{REDIS_BASE}/{number}", token
    finally:
        if client.get(REDIS_OWNER_KEY) == token.encode():  # never flush a database taken over
            client.flushdb()
        client.close()


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def _wait_healthy(site: Site, procs: list[subprocess.Popen[bytes]], within: float = 120.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            raise RuntimeError(f"a {site.design} process exited at start:\n{site.log_tail()}")
        if all(_healthy(url) for url in site.urls or [site.url]):
            return
        time.sleep(0.2)
    raise RuntimeError(f"{site.design} not healthy after {within:.0f}s:\n{site.log_tail()}")


@contextmanager
def _processes(site: Site, commands: dict[str, list[str]]) -> Iterator[Site]:
    procs: list[subprocess.Popen[bytes]] = []
    site.log = tempfile.TemporaryFile()
    try:
        for name, command in commands.items():
            proc = subprocess.Popen(command, env=site.env, stdout=site.log, stderr=subprocess.STDOUT)
            procs.append(proc)
            site.pids[name] = proc.pid
        _wait_healthy(site, procs)
        yield site
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        site.log.close()


def _common_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAILBOOK_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _redis_pid(url: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        return int(client.info("server")["process_id"])
    finally:
        client.close()


@contextmanager
def _railbook_redis(redis_db: int, primaries: int) -> Iterator[tuple[str, str | None, list[str]]]:
    """The run's Redis: a logical database claimed on the shared server (``primaries`` 0), or a scratch
    Redis Cluster of ``primaries`` nodes. Its URL, the owner key's value (claimed database only) and
    the URLs of the cluster's primaries."""
    if not primaries:
        with claimed_redis(redis_db) as (url, owner):
            yield url, owner, []
        return
    with tempfile.TemporaryDirectory(prefix="railbook-bench-cluster-") as tmp:
        with redis_cluster(Path(tmp), primaries) as ports:
            nodes = [f"redis://127.0.0.1:{port}" for port in ports]
            yield nodes[0], None, nodes


def _pool_size(api_processes: int, committers: int) -> int:
    return max(2, min(BENCH_DB_POOL_SIZE, BENCH_DB_CONNECTIONS // (4 * api_processes + 2 * committers)))


@contextmanager
def railbook_site(
    *,
    api_workers: int,
    redis_db: int,
    extra_env: dict[str, str] | None = None,
    api_nodes: int = 1,
    committers: int = 1,
    redis_primaries: int = 0,
) -> Iterator[Site]:
    """railbook in distributed mode over PostgreSQL and Redis: ``api_nodes`` × ``railbook api``
    (``api_workers`` processes each, a port each) and ``committers`` × ``railbook worker`` (members of
    the order streams' consumer group); Redis a claimed logical database of the shared server, or with
    ``redis_primaries`` a Redis Cluster of that many primaries started for the run."""
    with ExitStack() as stack:
        dsn = stack.enter_context(scratch_database("railbook_bench"))
        redis_url, owner, redis_nodes = stack.enter_context(_railbook_redis(redis_db, redis_primaries))
        ports = [free_port() for _ in range(api_nodes)]
        env = _common_env()
        env.update(
            RAILBOOK_DATABASE_URL=dsn.replace("postgresql://", "postgresql+asyncpg://"),
            RAILBOOK_REDIS_URL=redis_url,
            RAILBOOK_REDIS_CLUSTER="true" if redis_primaries else "false",
            RAILBOOK_RATE_LIMITS="off",  # the whole crowd comes from one address
            RAILBOOK_ADMIN_MOBILE=ADMIN_MOBILE,
            RAILBOOK_ADMIN_PASSWORD=ADMIN_PASSWORD,
            RAILBOOK_JWT_SECRET="bench-" + "x" * 40,
            # Password hashing is the same cheap argon2 in both designs: the bench measures ticketing.
            RAILBOOK_ARGON2_TIME_COST="1",
            RAILBOOK_ARGON2_MEMORY_COST="1024",
            RAILBOOK_LOAD_SAMPLE_DATA="false",
            RAILBOOK_LOG_LEVEL="warning",
            RAILBOOK_DB_POOL_SIZE=str(_pool_size(api_nodes * api_workers, committers)),
        )
        env.update(extra_env or {})
        cli = [sys.executable, "-m", "railbook.cli"]
        subprocess.run([*cli, "db", "upgrade"], env=env, check=True, capture_output=True)
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        site = Site(
            "railbook",
            urls[0],
            dsn,
            redis_url,
            env=env,
            redis_owner=owner,
            urls=urls,
            redis_nodes=redis_nodes,
        )
        # One node and one committer keep the names of the single-node runs ("api", "worker").
        commands = {
            ("api" if api_nodes == 1 else f"api-{k + 1}"): [
                *cli,
                "api",
                "--port",
                str(port),
                "--workers",
                str(api_workers),
            ]
            for k, port in enumerate(ports)
        }
        for k in range(committers):
            name = "worker" if committers == 1 else f"committer-{k + 1}"
            commands[name] = [*cli, "worker", "--name", f"bench-{name}"]
        with _processes(site, commands):
            for k, node in enumerate(redis_nodes):
                site.pids[f"Redis primary {k + 1}"] = _redis_pid(node)
            yield site


@contextmanager
def naive_site(*, api_workers: int) -> Iterator[Site]:
    """The naive design (:mod:`railbook.bench.naive`): FastAPI + asyncpg, ``api_workers`` uvicorn
    workers, one PostgreSQL database and nothing else."""
    from railbook.bench.naive import create_schema

    with scratch_database("railbook_naive") as dsn:
        asyncio.run(create_schema(dsn, ADMIN_MOBILE, ADMIN_PASSWORD))
        port = free_port()
        env = _common_env()
        env.update(RAILBOOK_BENCH_NAIVE_DSN=dsn)
        site = Site("naive", f"http://127.0.0.1:{port}", dsn, None, env=env)
        command = [sys.executable, "-m", "railbook.bench.naive", "--port", str(port)]
        with _processes(site, {"api": [*command, "--workers", str(api_workers)]}):
            yield site
