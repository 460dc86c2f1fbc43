"""Reconciliation freeing drift on a drained train-day (PostgreSQL + Redis): segments the allocator holds
and no active ticket does are freed only when the day's order stream is drained, no release is on its
way, and nothing was allocated since the check; otherwise they are reported and left alone."""

from __future__ import annotations

import pytest
from sqlalchemy import update

from railbook.adapters.db.models import Order
from railbook.adapters.redis.allocator import RedisAllocator, order_stream_key
from railbook.adapters.redis.stream import GROUP
from railbook.bootstrap import Container
from railbook.domain.seating import journey_mask
from railbook.kit.clock import utcnow
from railbook.services.sales import inventory, reconcile
from railbook.workers.scheduler import Reconciler
from tests.integration.sale_days import FAR, one_seat_request, open_far_day, second_class, sold

pytestmark = pytest.mark.parametrize("store_settings", ["pg"], indirect=True)  # the order stream is Redis


async def _orphan(c: Container, code: str, a: int, b: int, order_id: str) -> int:
    """An allocation with its stream entry (as booking makes it) that never reaches the database."""
    seats = await c.allocator.allocate(
        code, FAR, one_seat_request(a, b), order_id=order_id, message={"order": "{}"}
    )
    return seats[0].seat_index


async def _deliver(c: Container, code: str, *, ack: bool) -> None:
    """What the committers do with the day's stream: read every entry, then (optionally) acknowledge."""
    assert c.redis is not None
    key = order_stream_key(code, FAR)
    try:
        await c.redis.xgroup_create(key, GROUP, id="0", mkstream=True)
    except Exception as exc:  # BUSYGROUP: the group exists already
        assert "BUSYGROUP" in str(exc)
    reply = await c.redis.xreadgroup(GROUP, "test", {key: ">"})
    ids = [entry_id for _, items in reply for entry_id, _ in items]
    if ack and ids:
        await c.redis.xack(key, GROUP, *ids)


async def test_a_drained_day_frees_what_no_active_ticket_holds(container: Container) -> None:
    code, daily = await open_far_day(container)
    await sold(container, daily, 0, 0, 2)  # in the database only: marked held
    orphan = await _orphan(container, code, 1, 3, "orphan")
    assert orphan == 0
    await _deliver(container, code, ack=True)
    assert await inventory.check_inventory(container, FAR, code)

    result = await reconcile.reconcile_day(container, code, FAR)
    assert (result.repaired_seats, result.freed_seats, result.unconfirmed) == (1, 1, [])
    assert (await second_class(container, code))[0] == journey_mask(0, 2)
    assert await inventory.check_inventory(container, FAR, code) == []
    assert isinstance(container.allocator, RedisAllocator)
    assert await container.allocator.audit(code, FAR) == []  # run table and index recounted
    assert (await container.allocator.remaining(code, FAR, 2, 3))["second"] == 15


async def test_orders_on_their_way_keep_the_drift(container: Container) -> None:
    code, _ = await open_far_day(container)
    seat = await _orphan(container, code, 0, 3, "on-its-way")
    held = journey_mask(0, 3)

    result = await reconcile.reconcile_day(container, code, FAR)  # no committer group yet: undelivered
    assert result.freed_seats == 0 and len(result.unconfirmed) == 1
    await _deliver(container, code, ack=False)  # delivered, not acknowledged: pending
    assert (await reconcile.reconcile_day(container, code, FAR)).freed_seats == 0
    assert (await second_class(container, code))[seat] == held

    await _deliver(container, code, ack=True)
    assert container.redis is not None
    key = order_stream_key(code, FAR)
    pending = await container.redis.xpending(key, GROUP)
    assert pending["pending"] == 1  # the first delivery is still unacknowledged
    ids = [p["message_id"] for p in await container.redis.xpending_range(key, GROUP, "-", "+", 10)]
    await container.redis.xack(key, GROUP, *ids)
    assert (await reconcile.reconcile_day(container, code, FAR)).freed_seats == 1
    assert (await second_class(container, code))[seat] == 0


async def test_a_release_on_its_way_keeps_the_drift(container: Container) -> None:
    code, daily = await open_far_day(container)
    order_id, _ = await sold(container, daily, 5, 0, 3, cancelled=True)  # release not confirmed
    seat = await _orphan(container, code, 0, 1, "drift")
    await _deliver(container, code, ack=True)

    result = await reconcile.reconcile_day(container, code, FAR)
    assert result.freed_seats == 0 and len(result.unconfirmed) == 1
    async with container.sessionmaker() as session, session.begin():
        await session.execute(update(Order).where(Order.id == order_id).values(released_at=utcnow()))
    assert (await reconcile.reconcile_day(container, code, FAR)).freed_seats == 1
    assert (await second_class(container, code))[seat] == 0


async def test_nothing_is_freed_once_an_order_was_allocated_since_the_check(container: Container) -> None:
    code, _ = await open_far_day(container)
    seat = await _orphan(container, code, 0, 2, "drift")
    await _deliver(container, code, ack=True)
    allocator = container.allocator
    assert isinstance(allocator, RedisAllocator)
    (epoch,) = await allocator.epochs([(code, FAR)])
    mark = await allocator.drained_mark(code, FAR)
    assert epoch is not None and mark is not None

    await _orphan(container, code, 2, 3, "newer")  # appended after the check (and takes seat 0 for 2→3)
    frees = [("second", seat, journey_mask(0, 2))]
    assert await allocator.unhold(code, FAR, frees, expected_epoch=epoch, drained_mark=mark) == 0
    assert await allocator.unhold(code, FAR, frees, expected_epoch="other", drained_mark=mark) == 0
    assert (await second_class(container, code))[seat] == journey_mask(0, 3)


async def test_the_scheduler_comes_back_to_a_day_left_with_drift(container: Container) -> None:
    code, _ = await open_far_day(container)
    seat = await _orphan(container, code, 1, 2, "late")
    await _deliver(container, code, ack=False)
    reconciler = Reconciler()
    await reconciler.run(container)  # delivered, not acknowledged: left alone, looked at again
    assert (code, FAR) in reconciler.drifting
    assert (await second_class(container, code))[seat] == journey_mask(1, 2)
    assert container.redis is not None
    key = order_stream_key(code, FAR)
    ids = [p["message_id"] for p in await container.redis.xpending_range(key, GROUP, "-", "+", 10)]
    await container.redis.xack(key, GROUP, *ids)
    await reconciler.run(container)
    assert (await second_class(container, code))[seat] == 0
    assert (code, FAR) not in reconciler.drifting
    assert await inventory.check_inventory(container, FAR, code) == []
