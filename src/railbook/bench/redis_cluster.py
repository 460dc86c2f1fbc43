"""A real Redis Cluster of primaries on loopback, started from the ``redis-server`` binary (what
``scripts/services`` installs): what the tests of the cluster mode and ``railbook bench flash-sale
--redis-primaries N`` run against. No persistence, no replicas: a scratch cluster for one run."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

PORT_RANGE = (30000, 55535)  # a node's cluster bus listens on its port + 10000: at most 65535
READY_TIMEOUT_S = 30.0
SLOTS = 16384


def _free(port: int) -> bool:
    """Whether the port and its cluster bus port (+10000) can both be bound on loopback."""
    for p in (port, port + 10000):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", p))
            except OSError:
                return False
    return True


def free_ports(count: int) -> list[int]:
    """``count`` ports in PORT_RANGE, free with their bus ports, picked from an ephemeral port's
    number so concurrent runs rarely try the same ones."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        start = PORT_RANGE[0] + s.getsockname()[1] % (PORT_RANGE[1] - PORT_RANGE[0] - 1000)
    ports: list[int] = []
    port = start
    while len(ports) < count:
        if port > PORT_RANGE[1]:
            port = PORT_RANGE[0]
        if _free(port):
            ports.append(port)
        port += 1
    return ports


def _cli(port: int, *args: str) -> str:
    out = subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    return out.stdout


def _up_or_gone(port: int, node: subprocess.Popen[bytes]) -> bool:
    return node.poll() is not None or "PONG" in _cli(port, "ping")


def _cluster_ok(port: int) -> bool:
    return "cluster_state:ok" in _cli(port, "cluster", "info")


def _wait(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"Redis Cluster: timed out waiting for {what}")
        time.sleep(0.05)


def _create(cli: str, ports: list[int]) -> None:
    """Join the nodes into one cluster, the slots split evenly. ``redis-cli --cluster create`` wants at
    least three primaries; one or two are given their slots and introduced to each other by hand."""
    if len(ports) >= 3:
        create = [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports)]
        create += ["--cluster-replicas", "0", "--cluster-yes"]
        created = subprocess.run(create, capture_output=True, text=True, timeout=60, check=False)
        if created.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {created.stdout}{created.stderr}")
        return
    share = SLOTS // len(ports)
    for k, port in enumerate(ports):
        last = SLOTS - 1 if k == len(ports) - 1 else (k + 1) * share - 1
        said = _cli(port, "cluster", "addslotsrange", str(k * share), str(last))
        if "OK" not in said:
            raise RuntimeError(f"CLUSTER ADDSLOTSRANGE on {port}: {said}")
    for port in ports[1:]:
        _cli(port, "cluster", "meet", "127.0.0.1", str(ports[0]))


@contextmanager
def redis_cluster(directory: Path, primaries: int = 3) -> Iterator[list[int]]:
    """Start ``primaries`` cluster-enabled nodes, join them into one cluster with no replicas, wait
    until every node reports ``cluster_state:ok``; yield their ports; kill the nodes afterwards."""
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if server is None or cli is None:
        raise RuntimeError("redis-server and redis-cli must be on PATH (scripts/services installs Redis)")
    for _ in range(3):  # a port taken between the check and the node's bind: pick others
        ports = free_ports(primaries)
        nodes: list[subprocess.Popen[bytes]] = []
        try:
            for port in ports:
                args = [server, "--port", str(port), "--bind", "127.0.0.1", "--daemonize", "no"]
                args += [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    str(directory / f"nodes-{port}.conf"),
                ]
                args += ["--save", "", "--appendonly", "no", "--dir", str(directory)]
                args += ["--logfile", str(directory / f"node-{port}.log")]
                nodes.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            for port, node in zip(ports, nodes, strict=True):
                _wait(partial(_up_or_gone, port, node), f"node {port}")
            if any(n.poll() is not None for n in nodes):
                continue
            _create(cli, ports)
            for port in ports:
                _wait(partial(_cluster_ok, port), f"cluster_state:ok on {port}")
            yield ports
            return
        finally:
            for node in nodes:
                node.kill()
            for node in nodes:
                node.wait(timeout=10)
    raise RuntimeError("could not start the Redis Cluster nodes (ports taken)")
