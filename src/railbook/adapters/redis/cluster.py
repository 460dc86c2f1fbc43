"""Redis Cluster support: the automatic pipeline per node, and the helpers the adapters use where a
single Redis and a cluster differ (multi-key reads across slots).

On a cluster every key lives in one of 16384 slots, each served by one primary. A command, and every
key of one script call, must stay in one slot: the keys a script touches together carry one hash tag
(``{G1:2026-12-01}`` for a train-day, ``{p7}`` for a passenger, ``{<order id>}`` for an order view).
A group of commands handed to the automatic pipeline may name keys of several slots (an admission
writes the day's keys and the order's pending record): here it is split by the node serving each
command's slot, each part rides that node's own batch (the same batching as ``AutoPipeline``, on a
connection of that node), and the replies are put back in the group's order. Commands of one slot go
to one node, in their order, consecutively; parts on different nodes run independently (the groups'
contract already allows other clients' commands between them, and no group needs an order across
slots).

A command answered MOVED (its slot moved to another node: resharding, or a failover the client had
not seen) is sent again to the node that answer names, once the slot map is updated; one answered ASK
(its slot being migrated) goes to the named node behind ``ASKING``. A node that cannot be reached
fails the callers of its batch like a lost connection to a single Redis (the caller classifies it as
an outage) and makes the client read the cluster's layout again before its next command, so a replica
promoted by a failover is found.

The single-node path never comes here: ``make_autopipe`` returns the plain ``AutoPipeline`` then.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import hiredis
from redis.exceptions import AskError, MovedError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from railbook.adapters.redis.autopipe import MAX_IN_FLIGHT, AutoPipeline, Command

# Redirections followed for one command before its MOVED/ASK answer is returned as its reply.
MAX_REDIRECTS = 5
_SCRIPT_CALLS = frozenset({"EVALSHA", "EVAL", "evalsha", "eval", b"EVALSHA", b"EVAL"})


def make_autopipe(redis: Any, *, cluster: bool) -> AutoPipeline:
    """The process's automatic pipeline: per node on a cluster, else the single-connection one."""
    return ClusterAutoPipeline(redis) if cluster else AutoPipeline(redis)


def autopipe_for(redis: Any) -> AutoPipeline:
    """An automatic pipeline of its own for ``redis`` (a single Redis or a cluster client)."""
    return make_autopipe(redis, cluster=is_cluster(redis))


def is_cluster(redis: Any) -> bool:
    """Whether ``redis`` is a cluster client (its commands are routed by slot)."""
    return hasattr(redis, "nodes_manager")


def command_key(command: Command) -> Any:
    """The key a command is routed by: a script call's first key, else its first argument (every
    command the adapters batch names its key first); None for a command without one."""
    if command[0] in _SCRIPT_CALLS:
        return command[3] if int(command[2]) > 0 else None
    return command[1] if len(command) > 1 else None


class _NodePool:
    """A cluster node's connections behind the pool interface ``AutoPipeline._round_trip`` uses."""

    def __init__(self, node: Any) -> None:
        self.node = node

    async def get_connection(self) -> Any:
        return self.node.acquire_connection()

    async def release(self, connection: Any) -> None:
        self.node.release(connection)


class _NodeClient:
    """What a node's lane needs of a client: the node's connections."""

    def __init__(self, node: Any) -> None:
        self.connection_pool = _NodePool(node)


class _NodeLane(AutoPipeline):
    """``AutoPipeline``'s batching towards one node: its groups leave together on one of its connections."""

    def __init__(self, node: Any) -> None:
        super().__init__(_NodeClient(node))
        self.node = node

    def submit(self, commands: Sequence[Command]) -> asyncio.Future[list[Any]]:
        """``execute`` without the wait: the future of the replies of ``commands``."""
        packed = b"".join(map(hiredis.pack_command, commands))
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Any]] = loop.create_future()
        self._queue.append((packed, len(commands), future))
        if not self._scheduled and self._in_flight < MAX_IN_FLIGHT:
            self._scheduled = True
            loop.call_soon(self._flush)
        return future


class ClusterAutoPipeline(AutoPipeline):
    """``AutoPipeline`` over a ``RedisCluster``: a group split by node, one batching lane per node
    (see the module doc). ``execute_scripted`` and ``evalsha`` are inherited: a NOSCRIPT reply loads
    the scripts on every primary (redis-py sends SCRIPT LOAD to all of them) and the group goes again."""

    def __init__(self, redis: Any) -> None:
        super().__init__(redis)
        self._lanes: dict[str, _NodeLane] = {}

    def _lane(self, node: Any) -> _NodeLane:
        lane = self._lanes.get(node.name)
        if lane is None or lane.node is not node:  # a new node, or the same address found again
            lane = self._lanes[node.name] = _NodeLane(node)
        return lane

    def _lane_for(self, command: Command) -> _NodeLane:
        key = command_key(command)
        manager = self.redis.nodes_manager
        if key is None:
            return self._lane(manager.default_node)
        return self._lane(manager.get_node_from_slot(self.redis.keyslot(key)))

    async def execute(self, commands: Sequence[Command]) -> list[Any]:
        """The replies of ``commands`` in order, errors as exception objects (see the module doc)."""
        if self.redis._initialize:  # redis-py's flag: no slot map yet, or a node was lost since
            await self.redis.initialize()
        replies: list[Any] = [None] * len(commands)
        todo = list(range(len(commands)))
        asking: dict[int, Any] = {}  # command index -> the node an ASK named
        for _ in range(MAX_REDIRECTS + 1):
            parts: dict[_NodeLane, list[int]] = {}
            for i in todo:
                lane = self._lane(asking[i]) if i in asking else self._lane_for(commands[i])
                parts.setdefault(lane, []).append(i)
            sent = []
            for lane, indexes in parts.items():
                group = []
                for i in indexes:
                    if i in asking:
                        group.append(("ASKING",))
                    group.append(commands[i])
                sent.append((indexes, lane.submit(group)))
            outcomes = await asyncio.gather(*(f for _, f in sent), return_exceptions=True)
            failure: BaseException | None = None
            for (indexes, _), outcome in zip(sent, outcomes, strict=True):
                if isinstance(outcome, BaseException):
                    failure = failure or outcome
                    continue
                at = 0
                for i in indexes:
                    at += i in asking  # the ASKING reply
                    replies[i] = outcome[at]
                    at += 1
            if failure is not None:
                if isinstance(failure, RedisConnectionError | RedisTimeoutError | OSError):
                    self.redis._initialize = True  # read the layout again: a failover may have happened
                raise failure
            todo = []
            asking = {}
            for i, reply in enumerate(replies):
                if isinstance(reply, MovedError):
                    await self.redis.nodes_manager.move_slot(reply)
                    todo.append(i)
                elif isinstance(reply, AskError):
                    node = self.redis.get_node(host=reply.host, port=reply.port)
                    if node is not None:
                        asking[i] = node
                        todo.append(i)
            if not todo:
                return replies
        return replies


async def mget(redis: Any, keys: Sequence[Any]) -> list[Any]:
    """The values of ``keys`` (None where missing): one MGET on a single Redis; on a cluster, where
    they may live in several slots, one MGET per slot (``mget_nonatomic``)."""
    if is_cluster(redis):
        return list(await redis.mget_nonatomic(list(keys)))
    return list(await redis.mget(list(keys)))
