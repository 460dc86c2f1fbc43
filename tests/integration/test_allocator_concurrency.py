"""A flash crowd on one train-day: many clients over separate connections race allocate/release
on Redis; afterwards the audit finds no seat segment sold twice, no segment over capacity, and
counts, run index, masks and stream consistent with what the clients were told."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from railbook.adapters.redis.allocator import RedisAllocator, order_stream_key
from railbook.domain.errors import SoldOut
from railbook.domain.seating import (
    AllocationRequest,
    CarriageSpec,
    PassengerSeatRequest,
    class_seats,
    journey_mask,
)
from railbook.services.ports import DayLayout, HeldSeat

DATE = dt.date(2026, 12, 2)
CODE = "G77"
N_STOPS = 30
CARRIAGES = (
    CarriageSpec(1, "business", 2),
    CarriageSpec(2, "first", 4),
    CarriageSpec(3, "second", 6),
    CarriageSpec(4, "second", 6),
)


@dataclass
class Sale:
    from_index: int
    to_index: int
    seats: list[tuple[str, int]]
    released: bool = False


async def client_task(alloc: RedisAllocator, rnd: random.Random, ident: int, sales: list[Sale]) -> int:
    sold_out = 0
    mine: list[Sale] = []
    for i in range(60):
        if mine and rnd.random() < 0.15:
            s = mine.pop(rnd.randrange(len(mine)))
            held = [HeldSeat(c, k) for c, k in s.seats]
            rid = f"c{ident}-{i}"
            assert await alloc.release(CODE, DATE, s.from_index, s.to_index, held, release_id=rid)
            assert not await alloc.release(CODE, DATE, s.from_index, s.to_index, held, release_id=rid)
            s.released = True
            continue
        x = rnd.randrange(N_STOPS - 1)
        y = rnd.randrange(x + 1, N_STOPS)
        cls = rnd.choice(["business", "first", "second", "second"])
        prefs = [rnd.choice([None, None, "A", "F"]) for _ in range(rnd.choice([1, 1, 2, 3]))]
        req = AllocationRequest(x, y, tuple(PassengerSeatRequest(cls, p) for p in prefs))
        try:
            got = await alloc.allocate(CODE, DATE, req, order_id=f"o{ident}-{i}", message={"c": str(ident)})
        except SoldOut:
            sold_out += 1
            continue
        sale = Sale(x, y, [(a.seat_class, a.seat_index) for a in got])
        sales.append(sale)
        mine.append(sale)
    return sold_out


async def test_racing_clients_never_oversell(redis_url: str) -> None:
    await race([Redis.from_url(redis_url) for _ in range(6)])


async def race(clients: list[Any]) -> None:
    """48 tasks over these clients sell and release at random on one train-day; then no segment is
    sold twice, the masks are exactly the live sales, the counts agree, every sale has its message."""
    try:
        seats = {c: class_seats(CARRIAGES, c) for c in ("business", "first", "second")}
        setup = RedisAllocator(clients[0])
        await setup.drop_day(CODE, DATE)
        await clients[0].delete(order_stream_key(CODE, DATE))
        assert await setup.load_day(DayLayout(CODE, DATE, N_STOPS, seats, {}), replace=True)
        sales: list[Sale] = []
        allocators = [RedisAllocator(c) for c in clients]
        tasks = [client_task(allocators[i % len(allocators)], random.Random(i), i, sales) for i in range(48)]
        sold_out = sum(await asyncio.gather(*tasks))
        assert sold_out > 0, "the crowd should exhaust some journeys"

        # no seat segment sold twice among live sales; masks are exactly the live sales
        expected = {c: [0] * len(s) for c, s in seats.items()}
        for s in sales:
            if s.released:
                continue
            jm = journey_mask(s.from_index, s.to_index)
            for c, k in s.seats:
                assert expected[c][k] & jm == 0, f"{c} seat {k} sold twice"
                expected[c][k] |= jm
        masks = await setup.masks(CODE, DATE)
        assert masks == expected
        # sold <= capacity on every segment, counts consistent with masks for every pair
        for c, ms in masks.items():
            for k in range(N_STOPS - 1):
                assert sum(m >> k & 1 for m in ms) <= len(seats[c])
        for x in range(N_STOPS - 1):
            for y in range(x + 1, N_STOPS):
                free = {c: sum(m & journey_mask(x, y) == 0 for m in ms) for c, ms in masks.items()}
                assert await setup.remaining(CODE, DATE, x, y) == free
        assert await setup.audit(CODE, DATE) == []
        # every sale told to a client has its message in the stream, and nothing else does
        assert await clients[0].xlen(order_stream_key(CODE, DATE)) == len(sales)
    finally:
        for c in clients:
            await c.aclose()
