"""An order's admission riding in the allocation's round trip (Redis guard + Redis allocator): one
round trip; seats only for an admitted order; a refusal leaves nothing behind; a group sent again
after a lost script cache admits the order once and seats it once."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from redis.asyncio import Redis

from railbook.adapters.redis.allocator import RedisAllocator, order_stream_key
from railbook.adapters.redis.protection import (
    ADMIT_LUA,
    RedisOrderGuard,
    marker_key,
    markers_valid_key,
    tokens_key,
)
from railbook.domain.errors import Conflict, Unavailable
from railbook.domain.seating import AllocationRequest, CarriageSpec, PassengerSeatRequest, class_seats
from railbook.services.booking.ports import MarkersUnknown
from railbook.services.ports import AdmissionRefused, DayLayout
from tests.integration.pipes import Recording

DATE = dt.date(2030, 4, 1)
STOPS = 5
CARRIAGES = (CarriageSpec(1, "second", 2),)  # 10 seats


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url, socket_timeout=2)
    yield client
    await client.aclose()


@pytest.fixture
async def site(redis: Redis) -> AsyncIterator[tuple[str, RedisOrderGuard, RedisAllocator, Recording]]:
    code = f"F{uuid.uuid4().int % 90000 + 10000}"
    pipe = Recording(redis)
    guard = RedisOrderGuard(redis, member_orders_per_minute=0, ip_requests_per_second=0, autopipe=pipe)
    alloc = RedisAllocator(redis, autopipe=pipe)
    assert await alloc.load_day(
        DayLayout(code, DATE, STOPS, {"second": class_seats(CARRIAGES, "second")}, {})
    )
    await redis.set(markers_valid_key(code, DATE), "1")
    yield code, guard, alloc, pipe
    await alloc.drop_day(code, DATE)
    await redis.delete(order_stream_key(code, DATE), tokens_key(code, DATE))


def _order(
    guard: RedisOrderGuard,
    code: str,
    member: int,
    passengers: list[int],
    *,
    tokens: int = 100,
    checked: bool = False,
) -> tuple[str, Any]:
    order_id = str(uuid.uuid4())
    record = {"order_id": order_id, "member_id": member, "train_code": code, "date": DATE.isoformat()}
    admission = guard.prepare_admission(
        code, DATE, member, passengers, order_id, tokens, record=record, checked=checked
    )
    return order_id, admission


def _request(n: int) -> AllocationRequest:
    return AllocationRequest(0, STOPS - 1, tuple(PassengerSeatRequest("second", None) for _ in range(n)))


async def test_an_admitted_order_is_seated_in_the_same_round_trip(site: Any, redis: Redis) -> None:
    code, guard, alloc, pipe = site
    warm_id, warm = _order(guard, code, 6, [61])  # scripts cached (another test may have flushed them)
    await alloc.allocate(code, DATE, _request(1), order_id=warm_id, message={"m": "0"}, admission=warm)
    order_id, admission = _order(guard, code, 7, [71, 72])
    pipe.groups.clear()
    seats = await alloc.allocate(
        code, DATE, _request(2), order_id=order_id, message={"m": "1"}, admission=admission
    )
    assert len(seats) == 2
    assert len(pipe.groups) == 1  # admission, pending record and allocation: one group
    assert await redis.zscore(tokens_key(code, DATE), order_id) is not None
    assert await redis.get(marker_key(code, DATE, 7, 71)) == order_id.encode()
    assert await redis.exists(f"order:{order_id}") == 1
    assert await redis.xlen(order_stream_key(code, DATE)) == 2
    assert (await alloc.remaining(code, DATE, 0, STOPS - 1))["second"] == 7


@pytest.mark.parametrize("refusal", ["duplicate", "busy", "markers"])
async def test_a_refused_admission_seats_nothing_and_leaves_nothing(
    site: Any, redis: Redis, refusal: str
) -> None:
    code, guard, alloc, pipe = site
    first_id, first = _order(guard, code, 8, [81])
    await alloc.allocate(code, DATE, _request(1), order_id=first_id, message={"m": "1"}, admission=first)
    tokens, checked, passengers = 100, True, [82]
    if refusal == "duplicate":
        passengers = [82, 81]  # 81 already has an order in flight
    elif refusal == "busy":
        tokens = 1  # the first order holds the only token
    else:
        await redis.delete(markers_valid_key(code, DATE))
        checked = False
    order_id, admission = _order(guard, code, 8, passengers, tokens=tokens, checked=checked)
    pipe.groups.clear()
    with pytest.raises(AdmissionRefused) as refused:
        await alloc.allocate(
            code, DATE, _request(len(passengers)), order_id=order_id, message={"m": "2"}, admission=admission
        )
    expected = {"duplicate": Conflict, "busy": Unavailable, "markers": MarkersUnknown}[refusal]
    assert isinstance(refused.value.reason, expected)
    assert (await alloc.remaining(code, DATE, 0, STOPS - 1))["second"] == 9  # only the first order's seat
    assert await redis.xlen(order_stream_key(code, DATE)) == 1
    assert await redis.zscore(tokens_key(code, DATE), order_id) is None
    assert await redis.exists(f"order:{order_id}", marker_key(code, DATE, 8, 82)) == 0
    assert await redis.zscore("member:8:pending", order_id) is None
    # The first order's own token and marker are untouched.
    assert await redis.get(marker_key(code, DATE, 8, 81)) == first_id.encode()
    assert await redis.zscore(tokens_key(code, DATE), first_id) is not None


async def test_a_group_sent_again_after_a_lost_script_cache_admits_and_seats_once(
    site: Any, redis: Redis
) -> None:
    code, guard, alloc, pipe = site
    await redis.script_flush()
    await redis.script_load(ADMIT_LUA)  # the admission runs, the allocation answers NOSCRIPT
    order_id, admission = _order(guard, code, 9, [91])
    seats = await alloc.allocate(
        code, DATE, _request(1), order_id=order_id, message={"m": "1"}, admission=admission
    )
    assert len(seats) == 1
    assert len(pipe.groups) == 2  # sent once more with the scripts loaded
    assert await redis.zcard(tokens_key(code, DATE)) == 1
    assert await redis.xlen(order_stream_key(code, DATE)) == 1
    assert (await alloc.remaining(code, DATE, 0, STOPS - 1))["second"] == 9


async def test_an_order_without_its_token_is_not_seated(site: Any, redis: Redis) -> None:
    """The allocation's own check: the admission's token is gone (never taken, or dropped as stale)."""
    code, guard, alloc, _ = site
    order_id, admission = _order(guard, code, 10, [101])
    skipped = type(admission)([], [], admission.tokens_key, _admitted)  # send no admission commands
    with pytest.raises(RuntimeError, match="without a sale token"):
        await alloc.allocate(
            code, DATE, _request(1), order_id=order_id, message={"m": "1"}, admission=skipped
        )
    assert (await alloc.remaining(code, DATE, 0, STOPS - 1))["second"] == 10
    assert await redis.xlen(order_stream_key(code, DATE)) == 0


async def _admitted(replies: Sequence[Any]) -> None:
    return None
