"""Automatic pipelining: the Redis commands of concurrent requests sent together.

In a flash crowd most of an API process's time per order went into the round trips themselves
(socket writes and reads, event-loop wake-ups, redis-py's per-call connection checkout and retry
machinery), three per accepted order. Here each request hands over a *group* of commands and
awaits its replies; the groups queued while earlier batches are on the wire leave together as
one pipeline (one write, one read, one connection checkout). Under a crowd a batch carries tens of
orders; alone, a request still goes out at once (the flush is scheduled for the next loop turn, not
after a delay), so latency at low load is unchanged.

Semantics are those of a non-transactional pipeline: each group's commands run in order on one
connection, consecutively in the batch, but other clients' commands may run between them (a group
needing atomicity uses one script). A command error (script error, NOSCRIPT, wrong type) is that
command's reply, returned as the exception object; a failed round trip (connection lost, timeout)
raises in every caller of the batch, which then does not know whether its commands ran: callers
treat it exactly like a failed direct call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import hiredis
from prometheus_client import Counter
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

try:  # redis-py's hiredis reply parser (an internal class): read directly when it is the one in use
    from redis._parsers import _AsyncHiredisParser
except ImportError:  # pragma: no cover - another redis-py layout: replies are read one by one
    _AsyncHiredisParser = None  # type: ignore[assignment,misc]

BATCHES = Counter("railbook_redis_batches_total", "Round trips of the automatic Redis pipeline")
BATCHED_COMMANDS = Counter(
    "railbook_redis_batched_commands_total", "Commands sent by the automatic Redis pipeline"
)

# A command: its arguments (str, bytes, int or float).
Command = tuple[Any, ...]

# Batches on the wire at once. Fewer keep batches larger (everything queued while a batch is out
# rides the next), but an order makes two or three round trips one after another: with only two
# batches out, requests of a crowd queue behind the Redis time of others' batches and the process
# idles while they wait (64 connections: the API process at ~60 % of a core, replies ~20 ms at the
# median). Eight keep it busy (median ~11 ms) at the same CPU per order; measured with
# ``railbook bench orders`` against 2, 4, 12 and 16.
MAX_IN_FLIGHT = 8
# A batch past this many commands waits for the next one (bounds one reply's size and latency).
MAX_BATCH_COMMANDS = 2000


class AutoPipeline:
    """Groups of commands from concurrent callers, sent as shared pipelines (see the module doc)."""

    def __init__(self, redis: Any) -> None:
        self.redis = redis
        # Waiting groups: (packed commands, how many, the caller's future).
        self._queue: list[tuple[bytes, int, asyncio.Future[list[Any]]]] = []
        self._in_flight = 0
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.batches = 0  # round trips made, and the commands they carried (how well batching works)
        self.commands = 0

    async def execute(self, commands: Sequence[Command]) -> list[Any]:
        """The replies of ``commands`` (run in order, consecutively), errors as exception objects.
        Replies are raw (no redis-py reply callbacks): integers, bytes, lists, None."""
        # Packed here (hiredis), so a malformed command fails its own caller, not a whole batch.
        packed = b"".join(map(hiredis.pack_command, commands))
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Any]] = loop.create_future()
        self._queue.append((packed, len(commands), future))
        if not self._scheduled and self._in_flight < MAX_IN_FLIGHT:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self._scheduled = False
        if not self._queue or self._in_flight >= MAX_IN_FLIGHT:
            return
        take = size = 0
        for _, count, _ in self._queue:
            if take and size + count > MAX_BATCH_COMMANDS:
                break
            size += count
            take += 1
        batch = self._queue[:take]
        del self._queue[:take]
        self._in_flight += 1
        self.batches += 1
        self.commands += size
        BATCHES.inc()
        BATCHED_COMMANDS.inc(size)
        task = asyncio.ensure_future(self._send(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[tuple[bytes, int, asyncio.Future[list[Any]]]]) -> None:
        try:
            try:
                replies = await self._round_trip(
                    b"".join(p for p, _, _ in batch), sum(c for _, c, _ in batch)
                )
            except BaseException as exc:
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
                return
            at = 0
            for _, count, future in batch:
                if not future.done():
                    future.set_result(replies[at : at + count])
                at += count
        finally:
            self._in_flight -= 1
            if self._queue and not self._scheduled:
                self._scheduled = True
                asyncio.get_running_loop().call_soon(self._flush)

    async def _round_trip(self, packed: bytes, count: int) -> list[Any]:
        """One write, then ``count`` replies in order, on a pooled connection of the client (its
        connect, auth, database and timeouts apply)."""
        pool = self.redis.connection_pool
        connection = await pool.get_connection()
        try:
            await connection.send_packed_command(packed)
            parser = getattr(connection, "_parser", None)
            if _AsyncHiredisParser is not None and isinstance(parser, _AsyncHiredisParser):
                # The replies straight from hiredis under one timeout for the batch: redis-py's
                # per-reply read (a timeout context and bookkeeping each) costs about 6 µs of CPU a
                # reply against under 1 µs here. Error replies come back as values.
                try:
                    async with asyncio.timeout(connection.socket_timeout):
                        return [await parser.read_response() for _ in range(count)]
                except TimeoutError as exc:
                    raise RedisTimeoutError("Timeout reading a batch of replies") from exc
            replies: list[Any] = []
            for _ in range(count):
                try:
                    replies.append(await connection.read_response())
                except ResponseError as exc:  # that command's error reply; the others stand
                    replies.append(exc)
            return replies
        except BaseException:
            # Sent, partly read, or cancelled midway: the connection's state is unknown.
            await connection.disconnect(nowait=True)
            raise
        finally:
            await pool.release(connection)

    async def execute_scripted(self, commands: Sequence[Command], scripts: Sequence[str]) -> list[Any]:
        """``execute`` for a group calling these scripts by SHA (its other commands idempotent). A Redis
        that lost its script cache (restart, failover) answers NOSCRIPT and did not run that script:
        the scripts are loaded and the whole group sent again."""
        replies = await self.execute(commands)
        if any(isinstance(r, NoScriptError) for r in replies):
            for source in scripts:
                await self.redis.script_load(source)
            replies = await self.execute(commands)
        return replies

    async def evalsha(self, script: Any, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """One script call (a redis-py ``Script``) in a shared batch; its error replies raise."""
        command = ("EVALSHA", script.sha, len(keys), *keys, *args)
        (reply,) = raise_errors(await self.execute_scripted([command], [script.script]))
        return reply


def raise_errors(replies: Sequence[Any]) -> list[Any]:
    """The replies of a group, or the first error among them raised."""
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return list(replies)
