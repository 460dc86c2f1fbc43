"""Accept-path protections in Redis: rate limits, idempotency claims, duplicate markers, sale tokens,
and the pending-order records that let an accepted order be read back before it is committed."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Mapping, Sequence
from functools import lru_cache
from importlib import resources
from typing import Any

from railbook.adapters.redis import stream_progress
from railbook.adapters.redis.allocator import day_tag, order_stream_key
from railbook.adapters.redis.autopipe import AutoPipeline, raise_errors
from railbook.adapters.redis.cluster import autopipe_for, is_cluster, mget
from railbook.domain.errors import Conflict, DuplicateOrder, SaleBusy, TooManyRequests, Unavailable
from railbook.services.booking.ports import (
    PENDING_RECORD_TTL_SECONDS,
    MarkersUnknown,
    idempotency_hash_token,
)
from railbook.services.booking.trip_ports import TripsNotHeld
from railbook.services.ports import (
    IDEMPOTENCY_TTL_SECONDS,
    Admission,
    AdmissionRefused,
    KeptKey,
    kept_claim,
    kept_seconds,
)


def _script(name: str) -> str:
    return resources.files("railbook.adapters.redis").joinpath("lua", f"{name}.lua").read_text("utf-8")


# Stale sale tokens (an API process died between taking one and allocating) expire after this.
TOKEN_STALE_SECONDS = 600
MARKER_TTL_SECONDS = 24 * 3600
MARKERS_VALID_TTL_SECONDS = 7 * 24 * 3600
PASSENGERS_TTL_SECONDS = 24 * 3600
STREAM_REGISTER_SECONDS = 5.0


@lru_cache(maxsize=4096)
def _tag(train_code: str, date: dt.date | str) -> str:
    """The train-day's hash tag (remembered: the accept path names a day's keys several times)."""
    return day_tag(train_code, date if isinstance(date, dt.date) else dt.date.fromisoformat(date))


ADMIT_LUA = _script("admit")  # see lua/admit.lua

RECORD_IF_ADMITTED_LUA = _script("record_if_admitted")  # see lua/record_if_admitted.lua

# The member's passengers (id → name), cached for the accept path. A fill writes the hash only if
# the member's passenger generation is still the one read before the database was asked: an add or
# delete (which bumps the generation and deletes the hash) between the read and the fill makes the
# fill a no-op, so the hash never holds an entry older than the last change.
# KEYS: 1 hash, 2 generation.  ARGV: 1 expected generation ('' for none), 2 ttl, then id, name pairs.
FILL_PASSENGERS_LUA = """
if (redis.call('GET', KEYS[2]) or '') ~= ARGV[1] then return 0 end
for k = 3, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[k], ARGV[k + 1]) end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
return 1
"""

RELEASE_LUA = _script("release_markers")  # see lua/release_markers.lua
# Orders per release call: bounds how long one script holds Redis (~1 µs per order and marker).
RELEASE_CHUNK = 500


def tokens_key(train_code: str, date: dt.date | str) -> str:
    return f"{_tag(train_code, date)}:tokens"


def marker_key(train_code: str, date: dt.date | str, member_id: int, passenger_id: int) -> str:
    return f"{_tag(train_code, date)}:dup:{member_id}:{passenger_id}"


def markers_valid_key(train_code: str, date: dt.date | str) -> str:
    return f"{_tag(train_code, date)}:dupok"


def passengers_key(member_id: int) -> str:
    """The member's cached passengers; the hash tag keeps it in its generation's slot (one script
    writes both, and a Redis Cluster runs a script only on keys of one slot)."""
    return f"member:{{{member_id}}}:passengers"


def passengers_generation_key(member_id: int) -> str:
    return f"member:{{{member_id}}}:passengers:gen"


@lru_cache(maxsize=4096)
def stream_key(train_code: str, date: dt.date | str) -> str:
    """The train-day's order stream (named by the allocator, which appends to it)."""
    return order_stream_key(train_code, date if isinstance(date, dt.date) else dt.date.fromisoformat(date))


class RedisOrderGuard:
    """The OrderGuard of the distributed mode."""

    def __init__(
        self,
        redis: Any,
        *,
        member_orders_per_minute: int,
        ip_requests_per_second: int,
        group: str = "committers",
        autopipe: AutoPipeline | None = None,
    ) -> None:
        self.redis = redis
        # The accept path's round trips share batches with concurrent requests (and the allocator's).
        self.batch = autopipe or autopipe_for(redis)
        self.member_limit = member_orders_per_minute
        self.ip_limit = ip_requests_per_second
        self.group = group
        self._admit = redis.register_script(ADMIT_LUA)
        self._release = redis.register_script(RELEASE_LUA)
        self._fill = redis.register_script(FILL_PASSENGERS_LUA)
        self._record = redis.register_script(RECORD_IF_ADMITTED_LUA)
        # A single Redis: the admission without a key writes its record only once admitted.
        self.one_node = not is_cluster(redis)
        # Streams registered in ``order:streams`` lately (stream key → monotonic time): one SADD per
        # stream every few seconds instead of one per order. Safe after a loss of Redis: the set is
        # written again within STREAM_REGISTER_SECONDS, and the committers also SCAN for streams.
        self._registered: dict[str, float] = {}

    async def check_rates(self, member_id: int, client_ip: str) -> int:
        """Fixed windows: orders per member per minute, requests per client address per second."""
        now = int(time.time())
        mkey = f"rl:m:{member_id}:{now // 60}"
        ikey = f"rl:ip:{client_ip}:{now}"
        m, _, ip, _ = raise_errors(
            await self.batch.execute(
                [("INCR", mkey), ("EXPIRE", mkey, 61), ("INCR", ikey), ("EXPIRE", ikey, 2)]
            )
        )
        if int(m) > self.member_limit:
            raise TooManyRequests("Too many orders; slow down.", retry_after=60 - now % 60)
        if client_ip and int(ip) > self.ip_limit:
            raise TooManyRequests("Too many requests from this address.", retry_after=1)
        return int(m)

    def _idem_key(self, member_id: int, key: str) -> str:
        return f"idem:{member_id}:{idempotency_hash_token(member_id, key)}"

    async def claim_idempotency(
        self, member_id: int, key: str, request_hash: str, order_id: str
    ) -> str | None:
        value = kept_claim(order_id, request_hash)
        old = await self.redis.set(
            self._idem_key(member_id, key), value, nx=True, get=True, ex=IDEMPOTENCY_TTL_SECONDS
        )
        return old.decode() if isinstance(old, bytes) else old

    async def idempotency_claim(self, member_id: int, key: str) -> str | None:
        return _text(await self.redis.get(self._idem_key(member_id, key))) or None

    async def drop_idempotency(self, member_id: int, key: str) -> None:
        await self.redis.delete(self._idem_key(member_id, key))

    def _admission_keys(
        self, train_code: str, date: dt.date, member_id: int, passenger_ids: Sequence[int]
    ) -> list[str]:
        return [tokens_key(train_code, date), markers_valid_key(train_code, date)] + [
            marker_key(train_code, date, member_id, p) for p in passenger_ids
        ]

    def _admit_command(
        self,
        train_code: str,
        date: dt.date,
        member_id: int,
        passenger_ids: Sequence[int],
        order_id: str,
        tokens: int,
        checked: bool,
        trip_keys: Sequence[str] = (),
    ) -> tuple[Any, ...]:
        keys = [*self._admission_keys(train_code, date, member_id, passenger_ids), *trip_keys]
        args = [order_id, time.time(), tokens, MARKER_TTL_SECONDS, TOKEN_STALE_SECONDS, int(checked)]
        return ("EVALSHA", self._admit.sha, len(keys), *keys, *args, len(trip_keys))

    def prepare_admission(
        self,
        train_code: str,
        date: dt.date,
        member_id: int,
        passenger_ids: Sequence[int],
        order_id: str,
        tokens: int,
        *,
        record: Mapping[str, Any],
        checked: bool = False,
        record_json: str | None = None,
        trip_keys: Sequence[str] = (),
    ) -> Admission:
        """``admit_order`` without an idempotency key, as commands for the allocator's round trip:
        the admission script and the pending record, then (``conclude``) the refusal raised as
        AdmissionRefused once what they set is undone. ``trip_keys``: the order's trip claims run
        just before in the same round trip (single Redis only, see ADMIT_LUA); if they did not hold
        every trip the refusal is TripsNotHeld."""
        admit = self._admit_command(
            train_code, date, member_id, passenger_ids, order_id, tokens, checked, trip_keys
        )
        commands = [admit, *self._remember(record, record_json, once_admitted=self.one_node)]
        scripts = [ADMIT_LUA, RECORD_IF_ADMITTED_LUA] if self.one_node else [ADMIT_LUA]

        async def conclude(replies: Sequence[Any]) -> None:
            result = int(raise_errors(replies)[0])
            if result == 1:
                return
            if not self.one_node:  # the record was written whatever the answer
                await self._undo(train_code, date, member_id, passenger_ids, order_id, None, admitted=False)
            try:
                _raise_refusal(result)
            except (Conflict, Unavailable, MarkersUnknown, TripsNotHeld) as exc:
                raise AdmissionRefused(exc) from None
            raise RuntimeError(f"unknown admission answer {result}")

        return Admission(commands, scripts, tokens_key(train_code, date), conclude)

    async def admit_order(
        self,
        train_code: str,
        date: dt.date,
        member_id: int,
        passenger_ids: Sequence[int],
        order_id: str,
        tokens: int,
        *,
        record: Mapping[str, Any],
        idempotency: tuple[str, str] | None,
        checked: bool = False,
        record_json: str | None = None,
    ) -> str | None:
        """One round trip (a pipeline, so each key keeps its own slot on Redis Cluster): the key claim,
        the admission script, and the pending record. A refused admission takes the record back; a
        key claimed before wins over everything, and what this call set is undone."""
        idem_key = self._idem_key(member_id, idempotency[0]) if idempotency else None
        admit = self._admit_command(train_code, date, member_id, passenger_ids, order_id, tokens, checked)
        commands = [admit, *self._remember(record, record_json)]
        if idem_key is not None:
            assert idempotency is not None
            value = kept_claim(order_id, idempotency[1])
            commands.insert(0, ("SET", idem_key, value, "NX", "GET", "EX", IDEMPOTENCY_TTL_SECONDS))
        replies = raise_errors(await self.batch.execute_scripted(commands, [ADMIT_LUA]))
        if idem_key is not None and _text(replies[0]) == commands[0][2]:
            # The key already holds this very order's claim: a first attempt made it before Redis
            # answered NOSCRIPT and the group was sent again (a new order id is never claimed before).
            replies[0] = None
        claim = replies[0] if idem_key is not None else None
        result = int(replies[1 if idem_key is not None else 0])
        if claim is not None:
            await self._undo(train_code, date, member_id, passenger_ids, order_id, None, admitted=result == 1)
            return claim.decode() if isinstance(claim, bytes) else str(claim)
        if result != 1:
            await self._undo(
                train_code,
                date,
                member_id,
                passenger_ids,
                order_id,
                idempotency[0] if idempotency else None,
                admitted=False,
            )
        _raise_refusal(result)
        return None

    async def refuse_order(
        self,
        train_code: str,
        date: dt.date,
        member_id: int,
        passenger_ids: Sequence[int],
        order_id: str,
        idempotency_key: str | None,
    ) -> None:
        await self._undo(train_code, date, member_id, passenger_ids, order_id, idempotency_key, admitted=True)

    async def _undo(
        self,
        train_code: str,
        date: dt.date,
        member_id: int,
        passenger_ids: Sequence[int],
        order_id: str,
        idempotency_key: str | None,
        *,
        admitted: bool,
    ) -> None:
        """One round trip: token and markers back (if taken), the pending record and the key claim gone."""
        commands: list[tuple[Any, ...]] = []
        if admitted:
            keys = [tokens_key(train_code, date)] + [
                marker_key(train_code, date, member_id, p) for p in passenger_ids
            ]
            commands.append(("EVALSHA", self._release.sha, len(keys), *keys, 0, order_id, len(passenger_ids)))
        commands.append(("DEL", f"order:{order_id}"))
        commands.append(("ZREM", f"member:{member_id}:pending", order_id))
        if idempotency_key:
            commands.append(("DEL", self._idem_key(member_id, idempotency_key)))
        raise_errors(await self.batch.execute_scripted(commands, [RELEASE_LUA]))

    async def settle(
        self,
        train_code: str,
        date: dt.date | str,
        orders: Sequence[tuple[str, int, Sequence[int]]],
        *,
        keep_markers_seconds: int = 0,
    ) -> None:
        if not orders:
            return
        tokens = tokens_key(train_code, date)
        commands: list[tuple[Any, ...]] = []
        for start in range(0, len(orders), RELEASE_CHUNK):
            keys: list[str] = [tokens]
            args: list[Any] = [keep_markers_seconds]
            for order_id, member_id, passenger_ids in orders[start : start + RELEASE_CHUNK]:
                keys += [marker_key(train_code, date, member_id, p) for p in passenger_ids]
                args += [order_id, len(passenger_ids)]
            commands.append(("EVALSHA", self._release.sha, len(keys), *keys, *args))
        raise_errors(await self.batch.execute_scripted(commands, [RELEASE_LUA]))

    async def restore_markers(
        self, train_code: str, date: dt.date, holds: Sequence[tuple[str, int, int]], ttl_seconds: int
    ) -> None:
        """Set the markers of unpaid orders read from the database (order, member, passenger), where
        no marker exists yet."""
        for start in range(0, len(holds), 1000):
            pipe = self.redis.pipeline(transaction=False)
            for order_id, member_id, passenger_id in holds[start : start + 1000]:
                pipe.set(
                    marker_key(train_code, date, member_id, passenger_id), order_id, nx=True, ex=ttl_seconds
                )
            await pipe.execute()

    async def trust_markers(self, train_code: str, date: dt.date) -> None:
        await self.redis.set(markers_valid_key(train_code, date), "1", ex=MARKERS_VALID_TTL_SECONDS)

    async def marker_holders(
        self, train_code: str, date: dt.date, member_id: int, passenger_ids: Sequence[int]
    ) -> dict[int, str] | None:
        """One round trip on the day's slot: the markers-valid flag and each passenger's marker."""
        markers = [("GET", marker_key(train_code, date, member_id, p)) for p in passenger_ids]
        trusted, *holders = raise_errors(
            await self.batch.execute([("EXISTS", markers_valid_key(train_code, date)), *markers])
        )
        if not trusted:
            return None
        return {p: _text(h) for p, h in zip(passenger_ids, holders, strict=True) if h is not None}

    async def lookup(
        self, member_id: int, passenger_ids: Sequence[int], train_code: str, date: dt.date
    ) -> tuple[dict[int, str] | None, str, bool]:
        """One round trip: the cached names of these passengers (None unless all are cached), the
        member's passenger generation (for ``cache_passengers``) and whether the day's markers are valid."""
        names, generation, trusted = raise_errors(
            await self.batch.execute(
                [
                    ("HMGET", passengers_key(member_id), *[str(p) for p in passenger_ids]),
                    ("GET", passengers_generation_key(member_id)),
                    ("EXISTS", markers_valid_key(train_code, date)),
                ]
            )
        )
        gen = _text(generation)
        if any(n is None for n in names):
            return None, gen, bool(trusted)
        return {p: _text(n) for p, n in zip(passenger_ids, names, strict=True)}, gen, bool(trusted)

    async def passengers_generation(self, member_id: int) -> str:
        return _text(await self.redis.get(passengers_generation_key(member_id)))

    async def cache_passengers(
        self, member_id: int, generation: str, names: Mapping[int, str], keys: Sequence[KeptKey] = ()
    ) -> None:
        """Cache these passengers of the member, unless their list changed since ``generation`` was
        read. The member's kept ``keys`` are restored before (where absent, for what is left of their
        time), in a round trip of their own: the passengers are never cached without them."""
        restore = [
            ("SET", self._idem_key(member_id, k.key), kept_claim(k.order_id, k.request_hash), "NX", "EX", ttl)
            for k in keys
            if (ttl := kept_seconds(k)) > 0
        ]
        if restore:
            raise_errors(await self.batch.execute(restore))
        args: list[Any] = [generation, PASSENGERS_TTL_SECONDS]
        for pid, name in names.items():
            args += [pid, name]
        await self._fill(keys=[passengers_key(member_id), passengers_generation_key(member_id)], args=args)

    async def forget_passengers(self, member_id: int) -> None:
        """The member's passengers changed: a new generation, and the cached list dropped."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.incr(passengers_generation_key(member_id))
        pipe.expire(passengers_generation_key(member_id), 30 * 24 * 3600)
        pipe.delete(passengers_key(member_id))
        await pipe.execute()

    async def remember_pending(self, record: Mapping[str, Any]) -> None:
        """``order:{id}`` (read back while PENDING) and the member's pending list, in one round trip.
        It also registers the day's stream for the committers (a set of stream keys)."""
        raise_errors(await self.batch.execute(self._remember(record)))

    def _remember(
        self, record: Mapping[str, Any], encoded: str | None = None, *, once_admitted: bool = False
    ) -> list[tuple[Any, ...]]:
        """The record's commands; ``once_admitted``: one RECORD_IF_ADMITTED_LUA call instead, after the
        admission in the same round trip (single Redis)."""
        order_id = str(record["order_id"])
        if encoded is None:
            encoded = json.dumps(record, ensure_ascii=False)
        member_key = f"member:{record['member_id']}:pending"
        commands: list[tuple[Any, ...]]
        if once_admitted:
            keys = (
                tokens_key(str(record["train_code"]), str(record["date"])),
                f"order:{order_id}",
                member_key,
            )
            args = (order_id, encoded, PENDING_RECORD_TTL_SECONDS, time.time())
            commands = [("EVALSHA", self._record.sha, len(keys), *keys, *args)]
        else:
            commands = [
                ("SET", f"order:{order_id}", encoded, "EX", PENDING_RECORD_TTL_SECONDS),
                ("ZADD", member_key, time.time(), order_id),
                ("EXPIRE", member_key, PENDING_RECORD_TTL_SECONDS),
            ]
        stream = stream_key(str(record["train_code"]), str(record["date"]))
        now = time.monotonic()
        if self._registered.get(stream, 0.0) <= now:
            if len(self._registered) > 4096:
                self._registered.clear()
            self._registered[stream] = now + STREAM_REGISTER_SECONDS
            commands.append(("SADD", "order:streams", stream))
        return commands

    async def pending(self, order_id: str) -> dict[str, Any] | None:
        (raw,) = raise_errors(await self.batch.execute([("GET", f"order:{order_id}")]))
        return json.loads(raw) if raw else None

    async def pending_of_member(self, member_id: int) -> list[dict[str, Any]]:
        member_key = f"member:{member_id}:pending"
        ids = await self.redis.zrevrange(member_key, 0, 199)
        if not ids:
            return []
        raws = await mget(self.redis, [f"order:{i.decode()}" for i in ids])
        return [json.loads(r) for r in raws if r]

    async def forget_pending(self, orders: Sequence[tuple[str, int]]) -> None:
        if not orders:
            return
        commands: list[tuple[Any, ...]] = []
        for order_id, member_id in orders:
            commands.append(("ZREM", f"member:{member_id}:pending", order_id))
            commands.append(("EXPIRE", f"order:{order_id}", 600))
        raise_errors(await self.batch.execute(commands))

    async def queue_position(self, record: Mapping[str, Any]) -> int:
        return await stream_progress.queue_position(self.batch, self.group, _stream_of(record), record)

    async def drained_past(self, record: Mapping[str, Any], margin_seconds: float) -> bool:
        return await stream_progress.drained_past(
            self.redis, self.group, _stream_of(record), record, margin_seconds
        )


def _stream_of(record: Mapping[str, Any]) -> str:
    return stream_key(str(record["train_code"]), str(record["date"]))


def _raise_refusal(result: int) -> None:
    if result == -1:
        raise DuplicateOrder(
            "One of these passengers already has a pending or unpaid order for this train and date.",
        )
    if result == -2:
        raise SaleBusy("This train-day is busy; retry shortly.", retry_after=2)
    if result == -3:
        raise MarkersUnknown()
    if result == -4:
        raise TripsNotHeld()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value) if value is not None else ""
