"""The read model's cache in Redis (``OrderViewCache``), its calls sharing the process's automatic
pipeline: a read is one round trip, and the reads of concurrent requests share it.

Keys: ``ov:{order}`` the view (a string with a TTL) and ``ovg:{order}`` its generation; ``mv:{member}``
the member's entries (a hash: each field's value starts with its expiry time, Redis 7.0 having no
field TTL) and ``mvg:{member}`` the member's generation. The braces are hash tags: an entry and its
generation share a slot, so on a Redis Cluster the fill script may touch both and an invalidation's
commands reach them in order, on one node. Invalidation moves the generation on
(INCR) before it deletes the entries, in one group of commands; a fill is one script that writes
only while the generation is the one the reader saw. See ``booking.view_cache`` for the invariant.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from railbook.adapters.outage import is_store_outage
from railbook.adapters.redis.autopipe import AutoPipeline, raise_errors
from railbook.services.booking.ports import VIEW_GENERATION_TTL_SECONDS, VIEW_TTL_SECONDS

# KEYS[1] the entry (a string, or a hash with ARGV[4] its field), KEYS[2] its generation. ARGV[1] the
# generation the reader saw before it read the database, ARGV[2] the TTL, ARGV[3] the value. Writes
# nothing (returns 0) when the generation moved: the value may predate a committed change.
FILL_LUA = """
if tonumber(redis.call('GET', KEYS[2]) or '0') ~= tonumber(ARGV[1]) then return 0 end
if ARGV[4] then
  redis.call('HSET', KEYS[1], ARGV[4], ARGV[3])
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
else
  redis.call('SET', KEYS[1], ARGV[3], 'EX', tonumber(ARGV[2]))
end
return 1
"""


# KEYS[1] an order's view, KEYS[2] its generation; ARGV[1] the view's TTL, ARGV[2] the view as the
# committer wrote the order, ARGV[3] the generation's TTL. The generation moves on (as an
# invalidation moves it); only its first move (no change of the order since it was written) keeps the
# view, any later one drops what is cached.
WRITTEN_LUA = """
local generation = redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[3]))
if generation == 1 then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', tonumber(ARGV[1]))
else
  redis.call('DEL', KEYS[1])
end
return generation
"""


def order_keys(order_id: str) -> tuple[str, str]:
    """An order's view and its generation."""
    return f"ov:{{{order_id}}}", f"ovg:{{{order_id}}}"


def member_keys(member_id: int) -> tuple[str, str]:
    """A member's entries and their generation."""
    return f"mv:{{{member_id}}}", f"mvg:{{{member_id}}}"


def _generation(raw: Any) -> int:
    return int(raw) if raw is not None else 0


class RedisOrderViews:
    """``OrderViewCache`` on Redis. A read the store cannot answer (an outage) is a miss with no
    generation, so the caller reads the database and fills nothing; a failed invalidation raises."""

    def __init__(self, redis: Any, autopipe: AutoPipeline, *, ttl_seconds: int = VIEW_TTL_SECONDS) -> None:
        self.redis = redis
        self.batch = autopipe
        self.ttl = ttl_seconds
        self._fill = redis.register_script(FILL_LUA)
        self._written = redis.register_script(WRITTEN_LUA)

    async def _read(self, entry: tuple[Any, ...], generation_key: str) -> tuple[bytes | None, int | None]:
        try:
            raw, generation = raise_errors(await self.batch.execute([entry, ("GET", generation_key)]))
        except Exception as exc:
            if not is_store_outage(exc):
                raise
            return None, None
        return raw, _generation(generation)

    async def order(self, order_id: str) -> tuple[str | None, int | None]:
        view, generation_key = order_keys(order_id)
        raw, generation = await self._read(("GET", view), generation_key)
        return (raw.decode() if raw is not None else None), generation

    async def keep_order(self, order_id: str, generation: int, view: str) -> None:
        await self._keep(list(order_keys(order_id)), [generation, self.ttl, view])

    async def member_entry(self, member_id: int, name: str) -> tuple[str | None, int | None]:
        entries, generation_key = member_keys(member_id)
        raw, generation = await self._read(("HGET", entries, name), generation_key)
        if raw is None:
            return None, generation
        expires, _, value = raw.decode().partition(":")
        return (value if int(expires) > time.time() else None), generation

    async def keep_member_entry(self, member_id: int, name: str, generation: int, value: str) -> None:
        stamped = f"{int(time.time()) + self.ttl}:{value}"
        await self._keep(list(member_keys(member_id)), [generation, self.ttl, stamped, name])

    async def _keep(self, keys: list[str], args: list[Any]) -> None:
        """Best effort: a fill that fails only costs the next reader a database read."""
        try:
            await self.batch.evalsha(self._fill, keys, args)
        except Exception as exc:
            if not is_store_outage(exc):
                raise

    async def written(self, views: Sequence[tuple[str, str]], member_ids: Sequence[int]) -> None:
        commands: list[tuple[Any, ...]] = [
            ("EVALSHA", self._written.sha, 2, *order_keys(o), self.ttl, view, VIEW_GENERATION_TTL_SECONDS)
            for o, view in views
        ]
        commands += _forget_commands([member_keys(m) for m in member_ids])
        if commands:
            raise_errors(await self.batch.execute_scripted(commands, [WRITTEN_LUA]))

    async def forget(self, order_ids: Sequence[str], member_ids: Sequence[int]) -> None:
        commands = _forget_commands([order_keys(o) for o in order_ids] + [member_keys(m) for m in member_ids])
        if commands:
            raise_errors(await self.batch.execute(commands))


def _forget_commands(keys: Sequence[tuple[str, str]]) -> list[tuple[Any, ...]]:
    """Move each generation on, then drop its entry (see the module docstring)."""
    commands: list[tuple[Any, ...]] = []
    for entry, generation in keys:
        commands += [
            ("INCR", generation),
            ("EXPIRE", generation, VIEW_GENERATION_TTL_SECONDS),
            ("DEL", entry),
        ]
    return commands
