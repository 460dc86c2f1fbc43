"""What a flash-sale run cost the machine: CPU seconds per process group and per role, and the time
Redis spent executing commands, read before and after the crowd.

Process groups are the site's processes (uvicorn's supervisor and each of its worker processes apart),
the PostgreSQL backends of the run's database split by whose session they serve (a backend's client
port belongs to a socket of one of the site's processes), and the Redis primaries of a cluster the run
started. Roles sum the groups: API processes, committers, Redis primaries, PostgreSQL for each.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import asyncpg
import redis

from railbook.bench.site import Site
from railbook.bench.wire import cpu_seconds, process_tree, socket_ports

# The commands that run a Lua script (the allocator, admission, release, ...).
SCRIPT_COMMANDS = ("evalsha", "eval", "evalsha_ro", "eval_ro", "fcall")
CONNECT_TRIES = 60


def role(group: str) -> str:
    """The role a process group plays: ``API processes``, ``committers``, ``Redis primaries``,
    ``PostgreSQL for API``/``for committers``, or the group's own name."""
    if group.startswith("PostgreSQL"):
        return "PostgreSQL for committers" if group.endswith("(committers)") else "PostgreSQL for API"
    if group.startswith("api"):
        return "API processes"
    if group.startswith(("worker", "committer")):
        return "committers"
    if group.startswith("Redis"):
        return "Redis primaries"
    return group


async def _database_backends(dsn: str) -> list[tuple[int, int | None]]:
    """The PostgreSQL backends serving the site's database: (backend pid, client port). Tried again
    while the server is full (a PostgreSQL shared with other work)."""
    for attempt in range(CONNECT_TRIES):
        try:
            conn = await asyncpg.connect(dsn)
            break
        except asyncpg.TooManyConnectionsError:
            if attempt == CONNECT_TRIES - 1:
                raise
            await asyncio.sleep(0.5)
    try:
        rows = await conn.fetch(
            "SELECT pid, client_port FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await conn.close()
    return [(int(r["pid"]), r["client_port"]) for r in rows]


def cpu_groups(site: Site) -> dict[str, list[int]]:
    """The process groups whose CPU is reported: name → pids (see the module doc)."""
    groups: dict[str, list[int]] = {}
    for name, pid in site.pids.items():
        tree = process_tree(pid)
        if len(tree) > 1:  # uvicorn's supervisor and its worker processes
            groups[f"{name} supervisor"] = [pid]
            for k, child in enumerate(tree[1:]):
                groups[f"{name} process {k + 1}"] = [child]
        else:
            groups[name] = tree
    committers = {
        port
        for name, pids in groups.items()
        if role(name) == "committers"
        for pid in pids
        for port in socket_ports(pid)
    }
    for pid, port in asyncio.run(_database_backends(site.dsn)):
        whose = "committers" if port in committers else "API"
        groups.setdefault(f"PostgreSQL backends ({whose})", []).append(pid)
    return groups


def merge(*all_groups: dict[str, list[int]]) -> dict[str, list[int]]:
    """The union of several readings of the groups (a backend opened during the run joins its group)."""
    out: dict[str, list[int]] = {}
    for groups in all_groups:
        for name, pids in groups.items():
            out.setdefault(name, [])
            out[name] += [p for p in pids if p not in out[name]]
    return out


def cpu_by_pid(groups: dict[str, list[int]]) -> dict[int, float]:
    return {pid: cpu_seconds(pid) for pids in groups.values() for pid in pids}


def cpu_used(
    groups: dict[str, list[int]], before: dict[int, float], after: dict[int, float]
) -> dict[str, float]:
    """CPU seconds of each group between two readings; a process born in between counts from zero, one
    gone by the end (its last reading lost) counts nothing."""
    return {
        name: sum(max(0.0, after.get(p, 0.0) - before.get(p, 0.0)) for p in pids)
        for name, pids in groups.items()
    }


def by_role(cpu: dict[str, float]) -> dict[str, float]:
    """The groups' CPU seconds summed by ``role``."""
    out: dict[str, float] = {}
    for name, seconds in cpu.items():
        out[role(name)] = out.get(role(name), 0.0) + seconds
    return out


def command_stats(urls: Iterable[str]) -> dict[str, dict[str, dict[str, int]]]:
    """``INFO commandstats`` of each Redis node: url → command → {calls, usec}."""
    out = {}
    for url in urls:
        client = redis.Redis.from_url(url)
        try:
            info: dict[str, Any] = client.info("commandstats")
        finally:
            client.close()
        out[url] = {
            name.removeprefix("cmdstat_"): {"calls": int(v["calls"]), "usec": int(v["usec"])}
            for name, v in info.items()
        }
    return out


def redis_time(
    before: dict[str, dict[str, dict[str, int]]], after: dict[str, dict[str, dict[str, int]]], orders: int
) -> dict[str, Any]:
    """What Redis executed between two ``command_stats`` readings: per node the µs spent in commands
    and in scripts, the same per accepted order (``orders``) over all nodes, and the calls and µs of
    each command over all nodes. Empty without readings (a Redis shared with other work)."""
    if not after:
        return {}
    nodes: dict[str, dict[str, int]] = {}
    commands: dict[str, dict[str, int]] = {}
    for url, stats in after.items():
        was = before.get(url, {})
        delta = {
            cmd: {
                "calls": v["calls"] - was.get(cmd, {}).get("calls", 0),
                "usec": v["usec"] - was.get(cmd, {}).get("usec", 0),
            }
            for cmd, v in stats.items()
        }
        delta = {cmd: v for cmd, v in delta.items() if v["calls"] > 0}
        nodes[url] = {
            "usec": sum(v["usec"] for v in delta.values()),
            "script_usec": sum(v["usec"] for c, v in delta.items() if c in SCRIPT_COMMANDS),
        }
        for cmd, v in delta.items():
            sums = commands.setdefault(cmd, {"calls": 0, "usec": 0})
            sums["calls"] += v["calls"]
            sums["usec"] += v["usec"]
    total = sum(n["usec"] for n in nodes.values())
    scripts = sum(n["script_usec"] for n in nodes.values())
    return {
        "usec_per_order": total / orders if orders else float("nan"),
        "script_usec_per_order": scripts / orders if orders else float("nan"),
        "nodes": nodes,
        "commands": dict(sorted(commands.items(), key=lambda kv: -kv[1]["usec"])),
    }
