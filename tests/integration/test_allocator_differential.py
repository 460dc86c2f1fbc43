"""The three allocators are one: the domain model, the Redis Lua allocator and the in-process
allocator answer random sequences of allocate/release (including bad input) identically, and the
inventory invariants hold throughout. Hypothesis has no async tests of its own kind here: each
example drives a private event loop (LIBRARIES.md pitfall 5)."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from railbook.adapters.embedded.allocator import InProcessAllocator
from railbook.adapters.redis.allocator import RedisAllocator, order_stream_key
from railbook.domain.errors import DomainError
from railbook.domain.inventory import DayInventory
from railbook.domain.seating import (
    SEAT_CLASSES,
    SEAT_LETTERS,
    AllocationRequest,
    CarriageSpec,
    PassengerSeatRequest,
    Seat,
    class_seats,
    journey_mask,
)
from railbook.services.ports import DayLayout, HeldSeat

DATE = dt.date(2026, 12, 1)
_codes = itertools.count(1)
_run = uuid.uuid4().hex[:6]  # several sessions may share the test Redis


@dataclass
class Env:
    loop: asyncio.AbstractEventLoop
    redis: Redis


@pytest.fixture(scope="module")
def env(redis_url: str) -> Iterator[Env]:
    loop = asyncio.new_event_loop()
    client = Redis.from_url(redis_url)
    try:
        yield Env(loop, client)
    finally:
        loop.run_until_complete(client.aclose())
        loop.close()


@dataclass(frozen=True)
class Scenario:
    n_stops: int
    carriages: tuple[CarriageSpec, ...]
    preload: int  # how much is sold before the day is loaded (0..3)
    seed: int
    n_ops: int


scenarios = st.builds(
    Scenario,
    n_stops=st.integers(2, 40),
    carriages=st.lists(
        st.tuples(st.sampled_from(SEAT_CLASSES), st.integers(1, 4)), min_size=1, max_size=4
    ).map(lambda cs: tuple(CarriageSpec(i + 1, c, rows) for i, (c, rows) in enumerate(cs))),
    preload=st.integers(0, 3),
    seed=st.integers(0, 2**32),
    n_ops=st.integers(1, 60),
)


@dataclass
class Held:
    from_index: int
    to_index: int
    seats: list[tuple[str, int]]


@dataclass
class Harness:
    """Runs one scenario on all three allocators and checks them against its own ledger."""

    sc: Scenario
    redis_alloc: RedisAllocator
    redis: Redis
    code: str = field(default_factory=lambda: f"D{_run}{next(_codes)}")
    messages: list[dict[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rnd = random.Random(self.sc.seed)
        self.seats: dict[str, list[Seat]] = {}
        for c in {c.seat_class for c in self.sc.carriages}:
            self.seats[c] = class_seats(self.sc.carriages, c)
        n = self.sc.n_stops
        self.expected: dict[str, list[int]] = {}
        for c, ss in self.seats.items():
            ms = []
            for _ in ss:
                m = 0
                for _ in range(self.sc.preload):
                    x = self.rnd.randrange(n - 1)
                    y = self.rnd.randrange(x + 1, n)
                    if self.rnd.random() < 0.5:
                        m |= journey_mask(x, y)
                ms.append(m)
            self.expected[c] = ms
        self.domain = DayInventory.from_masks(n, self.seats, self.expected)
        self.local = InProcessAllocator(on_message=self._on_message)
        self.held: list[Held] = []
        self.release_ids: list[str] = []
        self.domain_released: set[str] = set()
        self.sent = 0

    async def _on_message(self, train_code: str, date: dt.date, body: dict[str, str]) -> None:
        self.messages.append(body)

    # -- random input
    def _journey(self) -> tuple[int, int]:
        n = self.sc.n_stops
        r = self.rnd.random()
        if r < 0.03:
            return self.rnd.choice([(0, 0), (1, 0), (0, n), (-1, 1), (n - 1, n - 1)])
        x = self.rnd.randrange(n - 1)
        return x, self.rnd.randrange(x + 1, n)

    def _pref(self, c: str) -> str | None:
        r = self.rnd.random()
        if c not in SEAT_LETTERS or r < 0.5:
            return None
        if r < 0.75:
            return self.rnd.choice(SEAT_LETTERS[c])
        if r < 0.93 and self.seats.get(c):
            return self.rnd.choice(self.seats[c]).name
        return self.rnd.choice(["Z", "99-01A", "01-99" + SEAT_LETTERS[c][0], "xx", "", "1-1A"])

    def _request(self) -> AllocationRequest:
        x, y = self._journey()
        k = self.rnd.choice([1, 1, 1, 2, 2, 3, 4, 5]) if self.rnd.random() > 0.02 else self.rnd.choice([0, 6])
        present = sorted(self.seats)
        ps = []
        for _ in range(k):
            r = self.rnd.random()
            c = self.rnd.choice(present) if r < 0.92 else self.rnd.choice([*SEAT_CLASSES, "nonsense"])
            ps.append(PassengerSeatRequest(c, self._pref(c)))
        return AllocationRequest(x, y, tuple(ps))

    # -- running
    async def start(self) -> None:
        layout = DayLayout(self.code, DATE, self.sc.n_stops, self.seats, self.expected)
        assert await self.redis_alloc.load_day(layout)
        assert not await self.redis_alloc.load_day(layout)
        assert await self.local.load_day(layout)

    async def allocate(self, i: int) -> None:
        req = self._request()
        with_msg = self.rnd.random() < 0.7
        msg = None
        if with_msg:  # the script spells out one message pair and packs any other number
            msg = dict(list({"member": f"m{i}", "note": "n"}.items())[: self.rnd.choice([0, 1, 1, 2])])
        outcomes: list[Any] = []
        for run in (
            lambda: _sync(self.domain.allocate, req),
            lambda: self.redis_alloc.allocate(self.code, DATE, req, order_id=f"o{i}", message=msg),
            lambda: self.local.allocate(self.code, DATE, req, order_id=f"o{i}", message=msg),
        ):
            try:
                outcomes.append(("ok", await run()))
            except DomainError as e:
                outcomes.append(("err", e.code))
        assert outcomes[0] == outcomes[1] == outcomes[2], (req, outcomes)
        kind, got = outcomes[0]
        if kind == "ok":
            jm = journey_mask(req.from_index, req.to_index)
            assert len({(a.seat_class, a.seat_index) for a in got}) == len(req.passengers)
            for a in got:
                assert self.expected[a.seat_class][a.seat_index] & jm == 0, "seat segment sold twice"
                self.expected[a.seat_class][a.seat_index] |= jm
                assert a.seat_class == req.passengers[a.position].seat_class
            self.held.append(Held(req.from_index, req.to_index, [(a.seat_class, a.seat_index) for a in got]))
            self.sent += with_msg

    async def release(self, i: int) -> None:
        r = self.rnd.random()
        if r < 0.1 and self.release_ids:
            rid = self.rnd.choice(self.release_ids)  # a repeat: must change nothing
            x, y, seats = 0, 1, [(c, 0) for c in list(self.seats)[:1]]
        elif r < 0.2 or not self.held:
            rid = f"r{i}"
            x, y = self._journey()
            c = self.rnd.choice([*self.seats, "first", "nonsense"])
            seats = [(c, self.rnd.choice([0, -1, 10_000, len(self.seats.get(c, []))]))]
        else:
            rid = f"r{i}"
            h = self.held.pop(self.rnd.randrange(len(self.held)))
            x, y = h.from_index, h.to_index
            if self.rnd.random() < 0.3 and y - x > 1:  # a partial release (a changed ticket)
                x = self.rnd.randrange(x, y - 1)
                y = self.rnd.randrange(x + 1, y + 1)
            seats = h.seats
        held = [HeldSeat(c, s) for c, s in seats]
        outcomes: list[Any] = []
        for run in (
            lambda: self.redis_alloc.release(self.code, DATE, x, y, held, release_id=rid),
            lambda: self.local.release(self.code, DATE, x, y, held, release_id=rid),
        ):
            try:
                outcomes.append(("ok", await run()))
            except DomainError as e:
                outcomes.append(("err", e.code))
        if rid in self.domain_released:
            dom: Any = ("ok", False)
        else:
            try:
                self.domain.release(x, y, seats)
                dom = ("ok", True)
            except DomainError as e:
                dom = ("err", e.code)
        assert outcomes[0] == outcomes[1] == dom, (x, y, seats, rid, outcomes, dom)
        if dom == ("ok", True):
            self.domain_released.add(rid)
            self.release_ids.append(rid)
            jm = journey_mask(x, y)
            for c, s in seats:
                self.expected[c][s] &= ~jm

    async def compare_state(self) -> None:
        masks = [
            self.domain.masks(),
            await self.redis_alloc.masks(self.code, DATE),
            await self.local.masks(self.code, DATE),
        ]
        assert masks[0] == masks[1] == masks[2] == self.expected

    async def final_checks(self) -> None:
        self.domain.check()
        assert await self.redis_alloc.audit(self.code, DATE) == []
        n = self.sc.n_stops
        for x in range(n - 1):
            for y in range(x + 1, n):
                free = {c: sum(m & journey_mask(x, y) == 0 for m in ms) for c, ms in self.expected.items()}
                got = await self.redis_alloc.remaining(self.code, DATE, x, y)
                assert (
                    got
                    == free
                    == self.domain.remaining(x, y)
                    == await self.local.remaining(self.code, DATE, x, y)
                ), (x, y)
        entries = await self.redis.xrange(order_stream_key(self.code, DATE))
        stream = [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in entries]
        # Each message carries the load epoch of its own allocator; the rest is the same bytes.
        assert {m.pop("epoch") for m in stream} <= set(await self.redis_alloc.epochs([(self.code, DATE)]))
        assert {m.pop("epoch") for m in self.messages} <= set(await self.local.epochs([(self.code, DATE)]))
        assert stream == self.messages
        assert len(stream) == self.sent

    async def run(self) -> None:
        await self.start()
        for i in range(self.sc.n_ops):
            if self.rnd.random() < 0.65:
                await self.allocate(i)
            else:
                await self.release(i)
            await self.compare_state()
        await self.final_checks()
        await self.redis_alloc.drop_day(self.code, DATE)
        assert not await self.redis_alloc.is_loaded(self.code, DATE)


async def _sync(fn: Any, *args: Any) -> Any:
    return fn(*args)


@pytest.mark.slow
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sc=scenarios)
def test_three_allocators_agree(env: Env, sc: Scenario) -> None:
    harness = Harness(sc, RedisAllocator(env.redis), env.redis)
    env.loop.run_until_complete(harness.run())


def test_unloaded_day_is_not_found_everywhere(env: Env) -> None:
    async def scenario() -> None:
        req = AllocationRequest(0, 1, (PassengerSeatRequest("second"),))
        for alloc in (RedisAllocator(env.redis), InProcessAllocator()):
            for call in (
                alloc.allocate("NOPE", DATE, req, order_id="x"),
                alloc.remaining("NOPE", DATE, 0, 1),
                alloc.release("NOPE", DATE, 0, 1, [HeldSeat("second", 0)], release_id="r"),
                alloc.masks("NOPE", DATE),
            ):
                with pytest.raises(DomainError) as e:
                    await call
                assert e.value.code == "DAY_NOT_LOADED"

    env.loop.run_until_complete(scenario())


@pytest.mark.parametrize("runs", [((1, 4), (0, 3)), ((0, 3), (1, 4))])
def test_equal_best_fit_runs_go_to_the_lowest_seat(env: Env, runs: tuple[tuple[int, int], ...]) -> None:
    """Two free runs of the same length contain the journey 1→3: every allocator picks the lower seat,
    whichever of the two runs starts at the lower stop (the tie-break the policy names)."""
    n = 5
    carriages = (CarriageSpec(1, "second", 1),)
    seats = {"second": class_seats(carriages, "second")}
    full = journey_mask(0, n - 1)
    masks = [full & ~journey_mask(a, b) for a, b in runs] + [full] * (len(seats["second"]) - len(runs))
    request = AllocationRequest(1, 3, (PassengerSeatRequest("second"),))

    async def scenario() -> None:
        code = f"T{_run}{next(_codes)}"
        layout = DayLayout(code, DATE, n, seats, {"second": masks})
        domain = DayInventory.from_masks(n, seats, {"second": list(masks)})
        expected = domain.allocate(request)
        assert [a.seat_index for a in expected] == [0]
        for alloc in (RedisAllocator(env.redis), InProcessAllocator()):
            await alloc.load_day(layout)
            got = await alloc.allocate(code, DATE, request, order_id=f"tie-{code}")
            want = [(a.seat_index, a.seat_name) for a in expected]
            assert [(a.seat_index, a.seat_name) for a in got] == want
            await alloc.drop_day(code, DATE)

    env.loop.run_until_complete(scenario())


def test_counts_past_one_byte(env: Env) -> None:
    """A class of 300 seats: run-table cells (big-endian u16, rewritten byte by byte by the script)
    go past 255 both ways, with a borrow or a carry between their two bytes, and the Redis allocator
    still answers as the domain model does, its tables equal to a recount."""
    n = 10
    carriages = tuple(CarriageSpec(c, "second", 20) for c in (1, 2, 3))
    seats = {"second": class_seats(carriages, "second")}
    rnd = random.Random(7)
    # 0→5 on 280 seats takes H[0][1..5] from 300 down past 256 and H[5][6..9] from 0 up past 255.
    requests = [AllocationRequest(0, 5, (PassengerSeatRequest("second"),))] * 280
    for _ in range(400):
        x = rnd.randrange(n - 1)
        y = rnd.randrange(x + 1, n)
        k = rnd.choice([1, 1, 1, 2, 3])
        prefs = [rnd.choice([None, None, None, "A", "F"]) for _ in range(k)]
        requests.append(AllocationRequest(x, y, tuple(PassengerSeatRequest("second", p) for p in prefs)))

    async def scenario() -> None:
        code = f"B{_run}{next(_codes)}"
        alloc = RedisAllocator(env.redis)
        await alloc.load_day(DayLayout(code, DATE, n, seats, {}))
        domain = DayInventory.from_masks(n, seats)
        sold = 0
        for i, req in enumerate(requests):
            outcomes: list[Any] = []
            for call in (
                _sync(domain.allocate, req),
                alloc.allocate(code, DATE, req, order_id=f"b{i}", message={"m": str(i)}),
            ):
                try:
                    outcomes.append(("ok", await call))
                except DomainError as e:
                    outcomes.append(("err", e.code))
            assert outcomes[0] == outcomes[1], (i, req, outcomes)
            sold += outcomes[0][0] == "ok"
        assert sold > 300
        assert await alloc.masks(code, DATE) == domain.masks()
        assert await alloc.audit(code, DATE) == []
        for x in range(n - 1):
            for y in range(x + 1, n):
                assert await alloc.remaining(code, DATE, x, y) == domain.remaining(x, y), (x, y)
        await alloc.drop_day(code, DATE)

    env.loop.run_until_complete(scenario())


@pytest.mark.parametrize("journey", [(1, 300), (299, 300), (254, 255), (255, 256), (0, 10_000)])
def test_stop_index_past_any_train(env: Env, journey: tuple[int, int]) -> None:
    """The Redis call carries stop indexes in one byte each: one past any train still gets the
    answers of the domain model (BAD_JOURNEY on a loaded day, DAY_NOT_LOADED on an unloaded one)."""
    seats = {"second": class_seats((CarriageSpec(1, "second", 2),), "second")}
    request = AllocationRequest(*journey, (PassengerSeatRequest("second"),))

    async def scenario() -> None:
        code = f"J{_run}{next(_codes)}"
        alloc = RedisAllocator(env.redis)
        for loaded, want in ((False, "DAY_NOT_LOADED"), (True, "BAD_JOURNEY")):
            if loaded:
                await alloc.load_day(DayLayout(code, DATE, 5, seats, {}))
                with pytest.raises(DomainError) as e:
                    DayInventory.from_masks(5, seats).allocate(request)
                assert e.value.code == want
            with pytest.raises(DomainError) as e:
                await alloc.allocate(code, DATE, request, order_id="j")
            assert e.value.code == want
        await alloc.drop_day(code, DATE)

    env.loop.run_until_complete(scenario())
