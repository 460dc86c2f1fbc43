"""Start a real ``railbook serve`` process on a free port for tests that talk to it over the network."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

START_TIMEOUT = 120.0


@dataclass(frozen=True)
class Site:
    url: str
    log: Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@contextmanager
def serve(workdir: Path, settings: dict[str, str]) -> Iterator[Site]:
    """``railbook serve`` with only the given RAILBOOK_ settings, ready on /healthz; stopped afterwards."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAILBOOK_")}
    env.update(settings)
    env.update(RAILBOOK_HOST="127.0.0.1", RAILBOOK_PORT=str(port))
    railbook = Path(sys.executable).with_name("railbook")
    command = [str(railbook), "serve", "--host", "127.0.0.1", "--port", str(port)]
    log_path = workdir / "serve.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(command, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail(f"`railbook serve` exited with {proc.returncode}:\n{log_tail(log_path)}")
            try:
                if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"`railbook serve` not healthy after {START_TIMEOUT}s:\n{log_tail(log_path)}")
            time.sleep(0.2)
        yield Site(url, log_path)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
