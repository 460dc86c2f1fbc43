"""The passengers' trip claims riding in an order's admission and allocation round trip (a single
Redis): one round trip for an accepted order; the admission holds back unless every trip is held (of
simultaneous orders for one person, by one member or by several, one is seated); a refusal leaves
nothing of the order but what the caller settles."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from redis.asyncio import Redis

from railbook.adapters.redis.allocator import RedisAllocator, order_stream_key
from railbook.adapters.redis.intake import RedisOrderIntake
from railbook.adapters.redis.protection import RedisOrderGuard, marker_key, markers_valid_key, tokens_key
from railbook.adapters.redis.trips import TRIPS_RESTORED_KEY, RedisTrips, trips_key
from railbook.domain.errors import DuplicateOrder
from railbook.domain.sale import Trip, train_day_name
from railbook.domain.seating import AllocationRequest, CarriageSpec, PassengerSeatRequest, class_seats
from railbook.services.booking.trip_ports import Traveller, TripRequest, TripsNotHeld
from railbook.services.ports import AdmissionRefused, DayLayout
from tests.integration.pipes import Recording

DATE = dt.date(2030, 4, 2)
STOPS = 5
CARRIAGES = (CarriageSpec(1, "second", 4),)  # 20 seats
STARTS = 1_900_000_000  # every day here runs at the same hours: any two trips collide


@dataclass
class Site:
    codes: list[str]
    intake: RedisOrderIntake
    trips: RedisTrips
    pipe: Recording


@pytest.fixture
async def redis(module_redis_url: str) -> AsyncIterator[Redis]:
    """A database of the module's own: the session's committers stay off its streams, and its
    "trips restored" flag is nobody else's."""
    client = Redis.from_url(module_redis_url, socket_timeout=2)
    yield client
    await client.aclose()


@pytest.fixture
async def site(redis: Redis) -> AsyncIterator[Site]:
    codes = [f"T{uuid.uuid4().int % 90000 + 10000}" for _ in range(3)]
    pipe = Recording(redis)
    guard = RedisOrderGuard(redis, member_orders_per_minute=0, ip_requests_per_second=0, autopipe=pipe)
    alloc = RedisAllocator(redis, autopipe=pipe)
    trips = RedisTrips(redis, pipe)
    for code in codes:
        assert await alloc.load_day(
            DayLayout(code, DATE, STOPS, {"second": class_seats(CARRIAGES, "second")}, {})
        )
        await redis.set(markers_valid_key(code, DATE), "1")
    await trips.restore([], now=int(time.time()))  # nothing to restore: trusted from here
    intake = RedisOrderIntake(guard, alloc, trips)
    assert intake.claims_trips
    yield Site(codes, intake, trips, pipe)
    for code in codes:
        await alloc.drop_day(code, DATE)
        await redis.delete(order_stream_key(code, DATE), tokens_key(code, DATE))


def _person() -> str:
    """A traveller key no other test uses."""
    return uuid.uuid4().hex[:20]


def _pid(key: str, member: int = 0) -> int:
    """The passenger id a member lists a person under (one per member and person)."""
    return int(key[:7], 16) * 100 + member


async def _order(site: Site, code: str, member: int, persons: list[str]) -> tuple[str, Any]:
    """An order on ``code``'s day with its trip claim for these persons (traveller keys), each under
    this member's passenger id: its id, and its seats or the refusal."""
    order_id = str(uuid.uuid4())
    record = {"order_id": order_id, "member_id": member, "train_code": code, "date": DATE.isoformat()}
    trip = Trip(train_day_name(code, DATE), STARTS, STARTS + 3600)
    passengers = [_pid(key, member) for key in persons]
    travellers = [Traveller(_pid(key, member), key) for key in persons]
    claim = TripRequest(order_id, member, trip, travellers, int(time.time()))
    request = AllocationRequest(0, STOPS - 1, tuple(PassengerSeatRequest("second", None) for _ in persons))
    try:
        seats = await site.intake.admit_and_allocate(
            code,
            DATE,
            request,
            member_id=member,
            passenger_ids=passengers,
            order_id=order_id,
            tokens=100,
            record=record,
            record_json="{}",
            checked=False,
            message={"m": order_id},
            trips=claim,
        )
    except AdmissionRefused as refused:
        return order_id, refused.reason
    return order_id, seats


async def _nothing_left(redis: Redis, code: str, order_id: str, member: int, passenger: int) -> None:
    """No token, marker, pending record or queued message of the order."""
    assert await redis.zscore(tokens_key(code, DATE), order_id) is None
    assert await redis.get(marker_key(code, DATE, member, passenger)) != order_id.encode()
    assert await redis.exists(f"order:{order_id}") == 0
    assert await redis.zscore(f"member:{member}:pending", order_id) is None
    queued = await redis.xrange(order_stream_key(code, DATE))
    assert all(fields[b"m"] != order_id.encode() for _, fields in queued)


async def test_an_order_whose_trips_are_held_is_seated_in_one_round_trip(site: Site, redis: Redis) -> None:
    await _order(site, site.codes[0], 1, [_person()])  # scripts cached
    p = _person()
    site.pipe.groups.clear()
    order_id, seats = await _order(site, site.codes[0], 2, [p])
    assert len(seats) == 1, seats
    assert len(site.pipe.groups) == 1  # claims, admission, pending record and allocation
    assert await redis.hexists(trips_key(p), order_id)
    assert await redis.exists(f"order:{order_id}") == 1


async def test_of_simultaneous_orders_for_one_passenger_one_is_seated(site: Site, redis: Redis) -> None:
    p, q = _person(), _person()
    # Every order names p; some name q too (a trip held for q must not let one through either).
    orders = [(code, [p] if k % 2 else [q, p]) for code in site.codes for k in range(4)]
    outcomes = await asyncio.gather(*[_order(site, code, 3, pids) for code, pids in orders])
    seated = [(order_id, o) for order_id, o in outcomes if not isinstance(o, Exception)]
    assert len(seated) == 1, outcomes
    winner = seated[0][0]
    for (code, _), (order_id, outcome) in zip(orders, outcomes, strict=True):
        if order_id == winner:
            continue
        assert isinstance(outcome, (TripsNotHeld, DuplicateOrder)), outcome
        if isinstance(outcome, TripsNotHeld):
            assert outcome.claim is not None and outcome.claim.clash is not None
            assert outcome.claim.clash.order_id == winner or outcome.claim.clash.traveller == q
            assert p not in outcome.claim.held
        await _nothing_left(redis, code, order_id, 3, _pid(p, 3))
    held = await redis.hgetall(trips_key(p))
    assert set(held) == {winner.encode()}


async def test_no_order_is_admitted_on_trips_not_known_complete(site: Site, redis: Redis) -> None:
    """The "restored" flag gone (a loss of Redis data) while the process still believes it: the claim
    writes, but the admission checks the flag itself and holds back."""
    await _order(site, site.codes[0], 4, [_person()])  # the process has seen the flag
    await redis.delete(TRIPS_RESTORED_KEY)
    try:
        p = _person()
        order_id, outcome = await _order(site, site.codes[1], 5, [p])
        assert isinstance(outcome, TripsNotHeld) and outcome.claim is not None
        assert not outcome.claim.trusted and outcome.claim.held == (p,)  # for the caller to give back
        await _nothing_left(redis, site.codes[1], order_id, 5, _pid(p, 5))
    finally:
        await site.trips.restore([], now=int(time.time()))


async def test_another_refusal_gives_back_the_trips_the_claim_held(site: Site, redis: Redis) -> None:
    p, q = _person(), _person()
    code = site.codes[0]
    await redis.set(marker_key(code, DATE, 6, _pid(p, 6)), "an-unpaid-order")
    order_id, outcome = await _order(site, code, 6, [q, p])
    assert isinstance(outcome, DuplicateOrder), outcome
    assert not await redis.hexists(trips_key(q), order_id)
    assert not await redis.hexists(trips_key(p), order_id)
    await _nothing_left(redis, code, order_id, 6, _pid(q, 6))


async def test_of_simultaneous_orders_for_one_person_by_several_members_one_is_seated(
    site: Site, redis: Redis
) -> None:
    """Members listing the same person (each under a passenger id of their own) race on every train:
    one order is seated; each refusal names the asking member's passenger, and the holder's."""
    p = _person()
    orders = [(code, member) for code in site.codes for member in (11, 12, 13)]
    outcomes = await asyncio.gather(*[_order(site, code, member, [p]) for code, member in orders])
    seated = [(order_id, o) for order_id, o in outcomes if not isinstance(o, Exception)]
    assert len(seated) == 1, outcomes
    winner = seated[0][0]
    winner_member = next(m for (_, m), (o, _) in zip(orders, outcomes, strict=True) if o == winner)
    for (code, member), (order_id, outcome) in zip(orders, outcomes, strict=True):
        if order_id == winner:
            continue
        assert isinstance(outcome, TripsNotHeld), outcome
        clash = outcome.claim.clash if outcome.claim is not None else None
        assert clash is not None and clash.order_id == winner and clash.traveller == p
        assert clash.passenger_id == _pid(p, member) and clash.holder_id == _pid(p, winner_member)
        await _nothing_left(redis, code, order_id, member, _pid(p, member))
    assert set(await redis.hgetall(trips_key(p))) == {winner.encode()}
