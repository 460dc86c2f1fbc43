"""What the load processes of the benches share: a lean keep-alive HTTP/1.1 client and CPU readings.

The client is a few lines on asyncio streams rather than httpx (the declared client), because the
load shares two cores with the server: httpx spends several hundred µs of CPU per request, this
client a few tens, so the figures measure the server and not the load generator.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any


def free_port() -> int:
    """A TCP port free on the loopback interface right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True)
class Answer:
    """One HTTP answer: status, the ``Retry-After`` seconds when given, and the body."""

    status: int
    retry_after: float | None
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    def error_code(self) -> str:
        """The contract's error code of a 4xx/5xx body, ``?`` when there is none."""
        try:
            return str(json.loads(self.body)["error"]["code"])
        except (ValueError, KeyError, TypeError):
            return "?"


class KeepAliveClient:
    """One persistent HTTP/1.1 connection: a request, then its status line, headers and body."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        """Open the connection unless it is open."""
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def request(
        self, method: str, path: str, body: Any = None, token: str | None = None, headers: str = ""
    ) -> Answer:
        """Send one request (``body`` as JSON when given) and read its whole answer."""
        await self.connect()
        assert self.reader is not None and self.writer is not None
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n{headers}"
        if token is not None:
            head += f"Authorization: Bearer {token}\r\n"
        raw = b""
        if body is not None:
            raw = json.dumps(body, ensure_ascii=False).encode()
            head += f"Content-Type: application/json\r\nContent-Length: {len(raw)}\r\n"
        elif method == "POST":
            head += "Content-Length: 0\r\n"
        self.writer.write(head.encode() + b"\r\n" + raw)
        try:
            got = await self.reader.readuntil(b"\r\n\r\n")
            status = int(got[9:12])
            length, retry_after, chunked = 0, None, False
            for line in got.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"retry-after":
                    retry_after = float(value)
                elif name == b"transfer-encoding" and b"chunked" in value.lower():
                    chunked = True
            data = (
                await self._chunked()
                if chunked
                else (await self.reader.readexactly(length) if length else b"")
            )
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            await self.close()
            raise
        return Answer(status, retry_after, data)

    async def _chunked(self) -> bytes:
        assert self.reader is not None
        parts: list[bytes] = []
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
            if size == 0:
                await self.reader.readuntil(b"\r\n")
                return b"".join(parts)
            parts.append(await self.reader.readexactly(size))
            await self.reader.readexactly(2)

    async def close(self) -> None:
        """Close the connection (quietly when the peer is gone already)."""
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except Exception:  # the peer may be gone already
                pass
        self.reader = self.writer = None


class ClientPool:
    """A fixed set of keep-alive connections shared by many virtual clients: a client holds one only
    for the length of a request, as a browser's connection pool would. With several servers (API nodes)
    the connections are spread over them round-robin, as a layer-4 balancer spreads connections, so
    the requests are too."""

    def __init__(self, nodes: Sequence[tuple[str, int]], size: int) -> None:
        self._idle: asyncio.Queue[KeepAliveClient] = asyncio.Queue()
        self._all = [KeepAliveClient(*nodes[k % len(nodes)]) for k in range(size)]
        for c in self._all:
            self._idle.put_nowait(c)
        # Seconds requests waited for a free connection: the load generator's own queue, which must
        # stay near zero for the figures to be the server's.
        self.waits: list[float] = []

    async def open(self) -> None:
        """Connect every connection before the timed part (requests are measured, not handshakes)."""
        await asyncio.gather(*(c.connect() for c in self._all))

    async def request(
        self, method: str, path: str, body: Any = None, token: str | None = None, headers: str = ""
    ) -> tuple[Answer, float]:
        """One request on a free connection: the answer and the seconds it took on the wire (the
        wait for a free connection excluded). A broken connection is retried once on a new one."""
        loop = asyncio.get_running_loop()
        asked = loop.time()
        client = await self._idle.get()
        self.waits.append(loop.time() - asked)
        try:
            for attempt in range(2):
                t0 = loop.time()
                try:
                    answer = await client.request(method, path, body, token, headers)
                    return answer, loop.time() - t0
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    if attempt:
                        raise
            raise AssertionError("unreachable")
        finally:
            self._idle.put_nowait(client)

    async def close(self) -> None:
        """Close every connection."""
        await asyncio.gather(*(c.close() for c in self._all))


def cpu_seconds(pid: int | None) -> float:
    """CPU seconds a process has used so far: from schedstat (ns) where the kernel keeps it, else
    user + system time from stat (clock ticks); NaN without a pid, 0.0 when it is gone."""
    if pid is None:
        return float("nan")
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def cpu_trace(pid: int | None, every_s: float = 0.02) -> Iterator[list[tuple[float, float]]]:
    """(wall-clock time, CPU seconds) of the process every ``every_s`` while the block runs, so its
    CPU can be read for a stretch known only afterwards."""
    trace: list[tuple[float, float]] = []
    done = threading.Event()

    def sample() -> None:
        while True:
            trace.append((time.time(), cpu_seconds(pid)))
            if done.wait(every_s):
                trace.append((time.time(), cpu_seconds(pid)))
                return

    thread = threading.Thread(target=sample, daemon=True)
    if pid is not None:
        thread.start()
    try:
        yield trace
    finally:
        done.set()
        if pid is not None:
            thread.join()


def cpu_at(trace: list[tuple[float, float]], when: float) -> float:
    """The traced CPU seconds at ``when``, interpolated between the samples around it."""
    if not trace:
        return float("nan")
    before = [p for p in trace if p[0] <= when] or trace[:1]
    after = [p for p in trace if p[0] >= when] or trace[-1:]
    (t0, v0), (t1, v1) = before[-1], after[0]
    return v0 if t1 <= t0 else v0 + (v1 - v0) * (when - t0) / (t1 - t0)


def process_tree(pid: int) -> list[int]:
    """The process and its descendants (uvicorn's worker processes under their supervisor)."""
    found = [pid]
    for p in found:
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                found.extend(int(c) for c in f.read().split())
        except OSError:
            continue
    return found


def socket_ports(pid: int) -> set[int]:
    """The local ports of the TCP sockets a process holds (its descriptors' socket inodes, looked up in
    the kernel's TCP tables); empty when it is gone or not ours to read."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        return set()
    ports = set()
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{table}") as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[9] in inodes:
                        ports.add(int(fields[1].rsplit(":", 1)[1], 16))
        except (OSError, StopIteration, IndexError):
            continue
    return ports
