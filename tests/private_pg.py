"""A PostgreSQL cluster of a test's own, for tests that stop, crash and restart the database under a
live server: ``initdb`` in a temporary directory, a free loopback port, trust authentication. The
shared server (port 5432) is never touched.

PostgreSQL refuses to run as root, and the tests run as root in CI: the cluster's files then belong
to the ``postgres`` user and its programs run as that user (``runuser``). The directory lives outside
pytest's temporary tree, which is private to root. A machine without the server binaries fails the
test that asks for one: these tests are part of the contract, never skipped."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import random
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.live_server import log_tail

SERVER_USER = "postgres"
HIGHEST_PORT = 55535
START_TIMEOUT_S = 60


def server_bin() -> Path:
    """The directory of ``initdb`` and ``pg_ctl``: $RAILBOOK_TEST_PG_BIN, else the newest Debian
    installation, else the PATH's."""
    if configured := os.environ.get("RAILBOOK_TEST_PG_BIN"):
        where = Path(configured)
    elif installed := sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name)
    ):
        where = installed[-1].parent
    else:
        where = Path(shutil.which("initdb") or "/nonexistent/initdb").parent
    if not (where / "initdb").is_file() or not (where / "pg_ctl").is_file():
        pytest.fail(
            f"PostgreSQL's server programs (initdb, pg_ctl) are not in {where}: install the server "
            "(Debian: postgresql) or set RAILBOOK_TEST_PG_BIN",
            pytrace=False,
        )
    return where


def free_low_port() -> int:
    """A free loopback port at most ``HIGHEST_PORT``, out of the kernel's ephemeral range's top."""
    for _ in range(200):
        port = random.randint(20000, HIGHEST_PORT)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise AssertionError("no free loopback port for a private PostgreSQL")


class PrivatePostgres:
    """One cluster: ``start``, ``stop`` (``fast``: clients are disconnected and the server shuts down
    cleanly; ``immediate``: every server process quits at once, as in a crash, and the next start
    recovers from the WAL) and ``start`` again, on the same port and data."""

    def __init__(self) -> None:
        self.bin = server_bin()
        self.root = Path(tempfile.mkdtemp(prefix="railbook-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = free_low_port()
        self.as_server_user: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam(SERVER_USER)
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self.as_server_user = ["runuser", "-u", SERVER_USER, "--"]

    @property
    def admin_dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    async def _run(self, program: str, *args: str) -> None:
        command = [*self.as_server_user, str(self.bin / program), *args]
        proc = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            raise AssertionError(
                f"{' '.join(command)} exited with {proc.returncode}:\n{out.decode(errors='replace')}\n"
                f"{log_tail(self.log)}"
            )

    async def init(self) -> None:
        """``initdb`` (superuser ``postgres``, trust), listening on 127.0.0.1 only, no Unix socket."""
        await self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"
        )
        settings = {
            "port": str(self.port),
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": "''",
            "max_connections": "200",
            "shared_buffers": "'32MB'",
            "logging_collector": "off",
        }
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())

    async def start(self) -> None:
        """Start and wait until it accepts connections (after crash recovery, if it crashed)."""
        await self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", str(START_TIMEOUT_S), "start"
        )

    async def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m fast`` (a clean shutdown) or ``-m immediate`` (a crash)."""
        await self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    async def close(self) -> None:
        if (self.data / "postmaster.pid").exists():
            await self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.asynccontextmanager
async def private_postgres() -> AsyncIterator[PrivatePostgres]:
    """A started private cluster, stopped and removed afterwards."""
    cluster = PrivatePostgres()
    try:
        await cluster.init()
        await cluster.start()
        yield cluster
    finally:
        await cluster.close()
