"""The Redis allocator: segment inventory of open train-days in Lua, one script call per order.

Keys of a train-day all carry the hash tag ``{CODE:YYYY-MM-DD}`` (one Cluster slot) and are passed
in ``KEYS``:

- ``{tag}:meta`` — hash ``n`` (stops), ``classes``, ``epoch`` (the load epoch); exists iff the day
  is loaded;
- ``{tag}:inv:<class>`` — one string per class: a 256-byte header (stops, seats, letters,
  carriages; the load epoch in its last 16 bytes); the run table as row suffix sums
  ``H[a][t] = Σ_{b≥t} G[a][b]`` (``a < t``, ``T = n(n-1)/2`` big-endian u16 cells in triangular
  order), so that ``remaining(x, y)`` is the sum of at most ``x+1`` cells ``H[a][y]``, ``a ≤ x``,
  and a sale rewrites two contiguous row pieces; the sold mask of every seat (big-endian u64); and
  the run index, one bitmap of ``ceil(N/8)`` bytes per run ``(a, b)`` (bit ``s`` set iff seat ``s``
  has that free run), so the lowest seat of a run is one ``BITPOS``. One ``GETRANGE`` gives a
  script the header and ``H``; one ``BITFIELD`` (masks, run bits) and one ``SETRANGE`` (``H``)
  apply an order's changes;
- ``{tag}:rel:<release_id>`` — idempotency marker of a release (expires);
- ``{tag}:orders`` — the order stream, appended by the allocating call (consumed elsewhere).

Seat choice is specified by :mod:`railbook.domain.inventory`; the checks that need no state run
here in Python, with the same code, before the round trip.
"""

from __future__ import annotations

import datetime as dt
import struct
import uuid
from collections.abc import Mapping, Sequence
from functools import cache
from importlib import resources
from typing import Any

from redis.asyncio import Redis
from redis.client import NEVER_DECODE
from redis.exceptions import ResponseError

from railbook.adapters.redis.autopipe import AutoPipeline
from railbook.adapters.redis.cluster import autopipe_for
from railbook.adapters.redis.stream import GROUP as STREAM_GROUP
from railbook.domain.errors import DayNotLoaded, error_for_code
from railbook.domain.inventory import (
    MAX_STOPS,
    ClassInventory,
    LetterPref,
    SeatNamePref,
    check_journey_static,
    check_request,
)
from railbook.domain.seating import (
    SEAT_CLASSES,
    AllocationRequest,
    CarriageSpec,
    Seat,
    SeatAssignment,
    class_seats,
)
from railbook.services.ports import Admission, Allocation, DayCounts, DayLayout, HeldSeat, SeatHold

HEADER_BYTES = 256
EPOCH_AT = 240  # the load epoch: header bytes 240..255 (NUL-padded ASCII)
EPOCH_BYTES = HEADER_BYTES - EPOCH_AT
_H_END = HEADER_BYTES + MAX_STOPS * (MAX_STOPS - 1)  # the header and the largest H (u16 cells)
RELEASE_MARKER_TTL_S = 4 * 86400  # longer than any cancel/refund retry window


# allocate.lua's per-passenger bytes: slot, kind (0 none, 1 letter, 2 seat name), v1, v2, v3
_PASSENGER = struct.Struct(">BBHHB")


def day_tag(train_code: str, date: dt.date) -> str:
    """The hash tag every key of a train-day shares: ``{G1:2026-12-01}``."""
    return f"{{{train_code}:{date.isoformat()}}}"


def order_stream_key(train_code: str, date: dt.date) -> str:
    """The train-day's order stream, appended by the allocating script."""
    return f"{day_tag(train_code, date)}:orders"


def _meta_key(tag: str) -> str:
    return f"{tag}:meta"


def _inv_key(tag: str, seat_class: str) -> str:
    return f"{tag}:inv:{seat_class}"


def _release_key(tag: str, release_id: str) -> str:
    return f"{tag}:rel:{release_id}"


def new_epoch() -> str:
    """A load epoch: random, so a copy rebuilt after a total loss of Redis data never reuses one."""
    return uuid.uuid4().hex[:EPOCH_BYTES]


# The lib/ modules a script is built on, prepended in this order (Redis scripts have no require).
_PRELUDES: dict[str, tuple[str, ...]] = {
    "allocate": ("layout", "carriage", "choose", "sell"),
    "hold": ("segments",),
    "unhold": ("segments",),
    "release": ("segments",),
}


@cache
def _lua(name: str) -> str:
    """A script's source: its lib/ modules, then its body, as one chunk."""
    lua = resources.files("railbook.adapters.redis").joinpath("lua")
    parts = [lua.joinpath("lib", f"{lib}.lua").read_text("utf-8") for lib in _PRELUDES.get(name, ())]
    parts.append(lua.joinpath(f"{name}.lua").read_text("utf-8"))
    return "\n".join(parts)


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _raise(reply: Sequence[Any]) -> None:
    """A script's refusal ``{0, code, text}`` as the domain error of that code."""
    code, text = _s(reply[1]), _s(reply[2])
    raise error_for_code(code)(text)


def _tri(n: int, a: int, b: int) -> int:
    """Index of run / ``H`` cell ``(a, b)``, ``a < b``, in the triangular tables of an ``n``-stop train."""
    return a * (2 * n - a - 1) // 2 + b - a - 1


def encode_class(inv: ClassInventory, epoch: str = "") -> bytes:
    """The class string of a class inventory (layout in the module docstring)."""
    n, count = inv.n_stops, len(inv.seats)
    letters = "".join(inv.letters).encode()
    head = struct.pack(">HHB8sB", n, count, len(letters), letters, len(inv.carriages))
    head += b"".join(struct.pack(">HH", c.carriage, c.rows) for c in inv.carriages)
    if len(head) > EPOCH_AT or len(epoch) > EPOCH_BYTES:
        raise ValueError(f"{inv.seat_class}: too many carriages for the class header")
    head = head.ljust(EPOCH_AT, b"\0") + epoch.encode().ljust(EPOCH_BYTES, b"\0")
    h = [0] * (n * (n - 1) // 2)
    for a in range(n):
        acc = 0
        for t in range(n - 1, a, -1):
            acc += inv.runs[a][t]
            h[_tri(n, a, t)] = acc
    width = (count + 7) // 8
    bitmaps = bytearray(len(h) * width)
    for (a, b), seats in inv.by_run.items():
        base = _tri(n, a, b) * width
        for s in seats:
            bitmaps[base + s // 8] |= 0x80 >> (s % 8)
    masks = struct.pack(f">{count}Q", *inv.masks)
    return head + struct.pack(f">{len(h)}H", *h) + masks + bytes(bitmaps)


def decode_class(blob: bytes) -> tuple[int, list[list[int]], list[int]]:
    """Stops, run table ``G`` (n×n) and masks of a class string."""
    n, count = struct.unpack_from(">HH", blob)
    t = n * (n - 1) // 2
    h = struct.unpack_from(f">{t}H", blob, HEADER_BYTES)
    g = [[0] * n for _ in range(n)]
    for a in range(n):
        for b in range(a + 1, n):
            g[a][b] = h[_tri(n, a, b)] - (h[_tri(n, a, b + 1)] if b + 1 < n else 0)
    masks = list(struct.unpack_from(f">{count}Q", blob, HEADER_BYTES + 2 * t))
    return n, g, masks


class RedisAllocator:
    """``Allocator`` over Redis: every call is one Lua script on the train-day's slot."""

    def __init__(
        self, redis: Redis, *, release_ttl_s: int = RELEASE_MARKER_TTL_S, autopipe: AutoPipeline | None = None
    ):
        self._redis = redis
        # allocate and remaining (the accept path's calls) share batches with concurrent requests
        self._batch = autopipe or autopipe_for(redis)
        self._release_ttl_s = release_ttl_s
        # redis-py's Script runs EVALSHA and reloads on NoScriptError (restart, failover).
        self._allocate = redis.register_script(_lua("allocate"))
        self._release = redis.register_script(_lua("release"))
        self._load = redis.register_script(_lua("load_day"))
        self._remaining = redis.register_script(_lua("remaining"))
        self._hold = redis.register_script(_lua("hold"))
        self._unhold = redis.register_script(_lua("unhold"))

    @property
    def allocate_sha(self) -> str:
        """SHA1 of the allocate script (to find it in INFO/SLOWLOG output)."""
        return str(self._allocate.sha)

    async def load_day(self, layout: DayLayout, *, replace: bool = False) -> bool:
        """Install a train-day atomically (``replace=True`` is the rebuild from the system of record)."""
        tag = day_tag(layout.train_code, layout.date)
        keys = [_meta_key(tag)]
        present = ",".join(c for c in SEAT_CLASSES if c in layout.seats)
        epoch = new_epoch()
        args: list[Any] = [int(replace), layout.n_stops, present, epoch, self._release_ttl_s]
        args.append(len(SEAT_CLASSES))
        for c in SEAT_CLASSES:
            keys.append(_inv_key(tag, c))
            if c in layout.seats:
                inv = ClassInventory(c, layout.n_stops, layout.seats[c], layout.masks.get(c))
                args.append(encode_class(inv, epoch))
            else:
                args.append(b"")
        unknown = set(layout.seats) - set(SEAT_CLASSES)
        if unknown:
            raise ValueError(f"unknown seat classes {sorted(unknown)}")
        keys += [_release_key(tag, r) for r in dict.fromkeys(layout.released)]
        return bool(await self._load(keys=keys, args=args))

    async def is_loaded(self, train_code: str, date: dt.date) -> bool:
        return bool(await self._redis.exists(_meta_key(day_tag(train_code, date))))

    async def allocate(
        self,
        train_code: str,
        date: dt.date,
        request: AllocationRequest,
        *,
        order_id: str,
        message: Mapping[str, str] | None = None,
        admission: Admission | None = None,
    ) -> Allocation:
        """One script call: checks, seat choice, masks and counts, and the stream entry together.
        With ``admission`` (from the Redis order guard) its commands go first in the same round
        trip, and the script seats the order only if it holds its sale token."""
        parsed = check_request(request)
        tag = day_tag(train_code, date)
        slots: dict[str, int] = {}
        for p in request.passengers:
            slots.setdefault(p.seat_class, len(slots) + 1)
        keys = [_meta_key(tag), order_stream_key(train_code, date)]
        keys += [_inv_key(tag, c) for c in slots]
        msg = dict(message or {})
        if len(msg) > 255:
            raise ValueError("an order message has at most 255 fields")
        # The call's numbers in one binary string (allocate.lua's ARGV 1). A stop index beyond any
        # train is clamped to 255 (x to 254, keeping x < y): the script answers BAD_JOURNEY for it
        # as it would for the index itself.
        head = bytearray(
            (min(request.from_index, 254), min(request.to_index, 255), len(slots), len(parsed), len(msg))
        )
        head.append(int(message is not None) | (2 if admission is not None else 0))
        if admission is not None:
            keys.append(admission.tokens_key)
        for p, q in zip(request.passengers, parsed, strict=True):
            if isinstance(q, LetterPref):
                head += _PASSENGER.pack(slots[p.seat_class], 1, q.letter_index, 0, 0)
            elif isinstance(q, SeatNamePref):
                head += _PASSENGER.pack(slots[p.seat_class], 2, q.carriage, q.row, q.letter_index)
            else:
                head += _PASSENGER.pack(slots[p.seat_class], 0, 0, 0, 0)
        args: list[Any] = [bytes(head), order_id, *slots]
        for k, v in msg.items():
            args += [k, v]
        if admission is None:
            reply = await self._batch.evalsha(self._allocate, keys, args)
        else:
            allocate = ("EVALSHA", self._allocate.sha, len(keys), *keys, *args)
            replies = await self._batch.execute_scripted(
                [*admission.commands, allocate], [*admission.scripts, _lua("allocate")]
            )
            await admission.conclude(replies[:-1])  # raises AdmissionRefused, having undone it
            reply = replies[-1]
            if isinstance(reply, Exception):
                raise reply
        if int(reply[0]) != 1:
            if _s(reply[1]) == "NOT_ADMITTED":  # the guard said admitted: the stores disagree
                raise RuntimeError(f"order {order_id} admitted without a sale token")
            _raise(reply)
        names = list(slots)
        seats = [
            SeatAssignment(int(reply[i]), names[int(reply[i + 1]) - 1], int(reply[i + 2]), _s(reply[i + 3]))
            for i in range(2, len(reply), 4)
        ]
        return Allocation(seats, _s(reply[1]))

    async def release(
        self,
        train_code: str,
        date: dt.date,
        from_index: int,
        to_index: int,
        seats: Sequence[HeldSeat],
        *,
        release_id: str,
        expected_epoch: str | None = None,
    ) -> bool:
        """One script call; a repeated ``release_id``, or a day loaded under another epoch than
        ``expected_epoch`` (when given), changes nothing and returns False."""
        check_journey_static(from_index, to_index)
        tag = day_tag(train_code, date)
        slots: dict[str, int] = {}
        for s in seats:
            slots.setdefault(s.seat_class, len(slots) + 1)
        keys = [_meta_key(tag), _release_key(tag, release_id)]
        keys += [_inv_key(tag, c) for c in slots]
        args: list[Any] = [from_index, to_index, self._release_ttl_s, len(slots), len(seats)]
        for s in seats:
            args += [slots[s.seat_class], s.seat_index]
        if expected_epoch is not None:
            args.append(expected_epoch)
        reply = await self._release(keys=keys, args=args)
        if int(reply[0]) == 0:
            _raise(reply)
        return int(reply[0]) == 1

    async def epochs(self, days: Sequence[tuple[str, dt.date]]) -> list[str | None]:
        """Every day's load epoch in one pipelined round trip (None: not loaded; "": loaded before
        epochs existed)."""
        if not days:
            return []
        pipe = self._redis.pipeline(transaction=False)
        for code, date in days:
            pipe.hmget(_meta_key(day_tag(code, date)), ["n", "epoch"])
        out: list[str | None] = []
        for n, epoch in await pipe.execute():
            out.append(None if n is None else ("" if epoch is None else _s(epoch)))
        return out

    async def hold(
        self, train_code: str, date: dt.date, holds: Sequence[SeatHold], *, expected_epoch: str
    ) -> int:
        """One script call marking the holds' segments held (see hold.lua); 0 if the epoch moved on."""
        if not holds:
            return 0
        tag = day_tag(train_code, date)
        slots: dict[str, int] = {}
        for h in holds:
            slots.setdefault(h.seat_class, len(slots) + 1)
        keys = [_meta_key(tag), *(_inv_key(tag, c) for c in slots)]
        args: list[Any] = [expected_epoch, len(slots), len(holds)]
        for h in holds:
            check_journey_static(h.from_index, h.to_index)
            args += [slots[h.seat_class], h.seat_index, h.from_index, h.to_index, len(h.release_ids)]
            keys += [_release_key(tag, r) for r in h.release_ids]
        reply = await self._hold(keys=keys, args=args)
        if int(reply[0]) != 1:
            if _s(reply[1]) == "EPOCH_CHANGED":
                return 0
            _raise(reply)
        return int(reply[1])

    async def drained_mark(self, train_code: str, date: dt.date) -> str | None:
        """The stream's last-generated-id when every order appended to the train-day's stream is
        acknowledged by the committers (group with no pending and no undelivered entry); None when the
        stream or its group is missing or orders are on their way (see unhold.lua)."""
        key = order_stream_key(train_code, date)
        pipe = self._redis.pipeline(transaction=False)
        pipe.xinfo_stream(key)
        pipe.xinfo_groups(key)
        try:
            stream, groups = await pipe.execute()
        except ResponseError:  # no such stream
            return None
        for g in groups:
            fields = {_s(k): v for k, v in g.items()}
            if _s(fields.get("name", b"")) == STREAM_GROUP:
                if fields.get("pending") == 0 and fields.get("lag") == 0:
                    return _s(stream["last-generated-id"])
        return None

    async def unhold(
        self,
        train_code: str,
        date: dt.date,
        frees: Sequence[tuple[str, int, int]],
        *,
        expected_epoch: str,
        drained_mark: str,
    ) -> int:
        """One script call freeing ``(class, seat index, mask)`` bits on a drained day (see unhold.lua);
        0 (nothing done) when the epoch moved on or orders were appended or are pending since."""
        if not frees:
            return 0
        tag = day_tag(train_code, date)
        slots: dict[str, int] = {}
        for seat_class, _, _ in frees:
            slots.setdefault(seat_class, len(slots) + 1)
        keys = [_meta_key(tag), order_stream_key(train_code, date), *(_inv_key(tag, c) for c in slots)]
        args: list[Any] = [expected_epoch, drained_mark, STREAM_GROUP, len(slots), len(frees)]
        for seat_class, index, mask in frees:
            args += [slots[seat_class], index, mask]
        reply = await self._unhold(keys=keys, args=args)
        if int(reply[0]) != 1:
            if _s(reply[1]) in ("EPOCH_CHANGED", "NOT_DRAINED"):
                return 0
            _raise(reply)
        return int(reply[1])

    async def remaining(
        self, train_code: str, date: dt.date, from_index: int, to_index: int
    ) -> dict[str, int]:
        """Seats free for the journey per class: one read-only script call over the run tables."""
        check_journey_static(from_index, to_index)
        tag = day_tag(train_code, date)
        keys = [_meta_key(tag), *(_inv_key(tag, c) for c in SEAT_CLASSES)]
        reply = await self._batch.evalsha(self._remaining, keys, [from_index, to_index])
        if int(reply[0]) != 1:
            _raise(reply)
        return {SEAT_CLASSES[int(reply[i]) - 1]: int(reply[i + 1]) for i in range(1, len(reply), 2)}

    async def count_tables(self, days: Sequence[tuple[str, dt.date]]) -> list[DayCounts | None]:
        """Every day's run tables in one pipelined round trip: a ``GETRANGE`` of the header and
        ``H`` of each class string (each one atomic; no script, so no script cache to miss), plus
        the meta key's ``EXISTS`` to tell a day not loaded from a day without seats."""
        tags = [day_tag(code, date) for code, date in days]
        pipe = self._redis.pipeline(transaction=False)
        for tag in tags:
            pipe.exists(_meta_key(tag))
            for c in SEAT_CLASSES:
                pipe.execute_command("GETRANGE", _inv_key(tag, c), 0, _H_END - 1, **{NEVER_DECODE: True})
        replies = await pipe.execute()
        out: list[DayCounts | None] = []
        width = 1 + len(SEAT_CLASSES)
        for i in range(len(tags)):
            chunk = replies[i * width : (i + 1) * width]
            blobs = {c: b for c, b in zip(SEAT_CLASSES, chunk[1:], strict=True) if b}
            if not blobs and not int(chunk[0]):
                out.append(None)
                continue
            n = 0
            reach: dict[str, list[list[int]]] = {}
            for c, blob in blobs.items():
                n = struct.unpack_from(">H", blob)[0]
                h = struct.unpack_from(f">{n * (n - 1) // 2}H", blob, HEADER_BYTES)
                rows = []
                for a in range(n):
                    base = _tri(n, a, a + 1) - a - 1  # index of cell (a, y) is base + y
                    rows.append([0] * (a + 1) + list(h[base + a + 1 : base + n]))
                reach[c] = rows
            out.append(DayCounts(n, reach))
        return out

    async def masks(self, train_code: str, date: dt.date) -> dict[str, list[int]]:
        """Sold masks per class, by seat index (one MGET of the class strings)."""
        tag = day_tag(train_code, date)
        blobs = await self._blobs(tag)
        out = {c: decode_class(b)[2] for c, b in zip(SEAT_CLASSES, blobs, strict=True) if b}
        if not out and not await self.is_loaded(train_code, date):
            raise DayNotLoaded("train-day not loaded")
        return out

    async def _blobs(self, tag: str) -> list[bytes | None]:
        """Raw class strings (binary: never decoded, whatever the client's decode_responses)."""
        keys = [_inv_key(tag, c) for c in SEAT_CLASSES]
        reply = await self._redis.execute_command("MGET", *keys, **{NEVER_DECODE: True})  # type: ignore[no-untyped-call]
        return list(reply)

    async def drop_day(self, train_code: str, date: dt.date) -> None:
        """Delete the day's inventory (not its order stream, which the order workers still drain)."""
        tag = day_tag(train_code, date)
        await self._redis.delete(_meta_key(tag), *(_inv_key(tag, c) for c in SEAT_CLASSES))

    async def audit(self, train_code: str, date: dt.date) -> list[str]:
        """Internal consistency of a loaded day: header, run table and run bitmaps against a recount
        from the masks (what ``railbook inventory check`` reports besides drift from the database)."""
        tag = day_tag(train_code, date)
        problems: list[str] = []
        for c, blob in zip(SEAT_CLASSES, await self._blobs(tag), strict=True):
            if not blob:
                continue
            n, _, masks = decode_class(blob)
            inv = ClassInventory(c, n, _seats_from_header(c, blob), masks)
            expected = encode_class(inv)
            t = n * (n - 1) // 2
            moff = HEADER_BYTES + 2 * t
            roff = moff + 8 * len(masks)
            for what, lo, hi in (
                ("header differs from its carriages", 0, EPOCH_AT),
                ("run table differs from a recount of the masks", HEADER_BYTES, moff),
                ("run index differs from a recount of the masks", roff, len(expected)),
            ):
                if blob[lo:hi] != expected[lo:hi]:
                    problems.append(f"{c}: {what}")
            if len(blob) != len(expected):
                problems.append(f"{c}: {len(blob)} bytes, {len(expected)} expected")
        return problems


def _seats_from_header(seat_class: str, blob: bytes) -> list[Seat]:
    """The seats of a class, rebuilt from the carriage table in its header."""
    specs = []
    for j in range(blob[13]):
        carriage, rows = struct.unpack_from(">HH", blob, 14 + 4 * j)
        specs.append(CarriageSpec(carriage=carriage, seat_class=seat_class, rows=rows))
    return class_seats(specs, seat_class)
