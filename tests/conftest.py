"""Shared fixtures: a fresh PostgreSQL database and a dedicated Redis DB per test session (and per
xdist worker), both real servers. Nothing depends on state left by an earlier run.

Tests that take more than a few seconds (flash crowds, Hypothesis differential runs, live servers and
subprocess workers, the fault harness) are marked ``slow``. The default run (and CI) runs everything;
for the fast subset while working::

    python -m pytest -m "not slow"

What several modules build the same way (the app behind a client, a container, a train-day on sale,
polling with ``wait_until``) lives in ``tests/support.py``."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
import redis

from railbook.adapters.db.migrate import upgrade

PG_ADMIN_DSN = os.environ.get("RAILBOOK_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_BASE = os.environ.get("RAILBOOK_TEST_REDIS", "redis://127.0.0.1:6379")
OWNER_KEY = "railbook:test:owner"


def _worker_number() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return int(worker[2:]) if worker.startswith("gw") else 0


@pytest.fixture(scope="session")
def pg_admin_dsn() -> str:
    return PG_ADMIN_DSN


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A freshly created and migrated PostgreSQL database of this test process's own."""
    with fresh_pg_database() as url:
        yield url


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A migrated SQLite file database (aiosqlite URL)."""
    path: Path = tmp_path_factory.mktemp("sqlite") / "railbook.db"
    url = f"sqlite+aiosqlite:///{path}"
    upgrade(url)
    return url


@contextmanager
def claimed_redis_db(preferred: int) -> Iterator[str]:
    """A Redis logical database (1..15) owned by the caller: claimed with an owner key set NX, so
    concurrent test runs on one machine never flush each other's data; flushed before and after."""
    token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    for number in [preferred, *[n for n in range(1, 16) if n != preferred]]:
        client = redis.Redis.from_url(f"{REDIS_BASE}/{number}")
        if client.set(OWNER_KEY, token, nx=True, ex=3 * 3600):
            break
        client.close()
    else:  # pragma: no cover - sixteen concurrent runs
        raise RuntimeError("no free Redis logical database for this test run")
    client.flushdb()
    client.set(OWNER_KEY, token, ex=3 * 3600)
    try:
        yield f"{REDIS_BASE}/{number}"
    finally:
        client.flushdb()
        client.close()


@contextmanager
def fresh_pg_database(admin_dsn: str = PG_ADMIN_DSN) -> Iterator[str]:
    """A freshly created and migrated PostgreSQL database (asyncpg URL) on the server of ``admin_dsn``
    (the shared one unless told), dropped afterwards."""
    name = f"railbook_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = admin_dsn.rsplit("/", 1)[0]
    url = f"{base.replace('postgresql://', 'postgresql+asyncpg://')}/{name}"
    try:
        upgrade(url)
        yield url
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis logical database of this test process's own."""
    with claimed_redis_db(8 + _worker_number() % 8) as url:
        yield url
