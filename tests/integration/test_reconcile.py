"""Load epochs and reconciliation on the real stores (PostgreSQL + Redis, and SQLite + the in-process
allocator): an order of a lost copy of its day is never committed, a release the rebuilt copy already
reflects is never applied again, and what the database holds is marked held again in the allocator."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

import psycopg
import pytest
from sqlalchemy import insert, select

from railbook.adapters.db.models import DailyTrain, Member, Order
from railbook.bootstrap import Container
from railbook.domain.seating import CarriageSpec, journey_mask
from railbook.services.after_sale.cancel import return_seats_of_orders
from railbook.services.booking.commit import OrderMessage, commit_batch
from railbook.services.ports import SeatHold
from railbook.services.sales import inventory, loading, opening, reconcile
from railbook.workers.scheduler import Reconciler
from tests.integration.sale_days import (
    FAR,
    one_seat_request,
    open_far_day,
    rng,
    second_class,
    sold,
)


async def _member(c: Container) -> int:
    async with c.sessionmaker() as session, session.begin():
        return int(
            (
                await session.execute(
                    insert(Member).returning(Member.id),
                    [{"mobile": f"170{rng.randrange(10**8):08d}", "name": "测试", "password_hash": "x"}],
                )
            ).scalar_one()
        )


async def _message(c: Container, daily: DailyTrain, seats: list[tuple[int, str]], epoch: str) -> OrderMessage:
    """The queued form of a one-passenger order for journey 0→3 on these (index, name) seats."""
    return OrderMessage(
        order_id=str(uuid.uuid4()),
        member_id=await _member(c),
        daily_train_id=daily.id,
        train_code=daily.train_code,
        date=daily.service_date,
        from_index=0,
        to_index=3,
        from_station="x",
        to_station="y",
        passengers=({"passenger_id": 1, "name": "测试", "price_fen": 100},),
        seats=tuple(
            {"position": 0, "seat_class": "second", "seat_index": i, "seat_name": name} for i, name in seats
        ),
        idempotency_key=None,
        request_hash=None,
        created_at=dt.datetime.now(dt.UTC),
        epoch=epoch,
    )


async def _order(c: Container, order_id: str) -> Order:
    async with c.sessionmaker() as session:
        return (await session.execute(select(Order).where(Order.id == order_id))).scalar_one()


async def test_every_load_stamps_a_new_epoch_and_allocations_report_theirs(container: Container) -> None:
    code, _ = await open_far_day(container)
    (first,) = await container.allocator.epochs([(code, FAR)])
    assert first
    seats = await container.allocator.allocate(code, FAR, one_seat_request(0, 1), order_id="o1")
    assert getattr(seats, "epoch", None) == first
    assert await loading.rebuild_inventory(container, FAR, code) == 1
    (second,) = await container.allocator.epochs([(code, FAR)])
    assert second and second != first
    assert await container.allocator.epochs([(code, FAR + dt.timedelta(days=1))]) == [None]


async def test_reconcile_marks_held_what_the_database_holds_and_frees_nothing(container: Container) -> None:
    code, daily = await open_far_day(container)
    await sold(container, daily, 0, 0, 2)  # in the database only: drift
    in_flight = await container.allocator.allocate(code, FAR, one_seat_request(2, 3), order_id="in-flight")
    assert in_flight[0].seat_index == 0  # the allocator saw seat 0 free for 2→3 as well
    assert await inventory.check_inventory(container, FAR, code)

    result = await reconcile.reconcile_day(container, code, FAR)
    assert result.repaired_seats == 1
    assert len(result.unconfirmed) == 1  # the accepted order not committed yet: reported, left alone
    assert (await second_class(container, code))[0] == journey_mask(0, 3)
    assert (await container.allocator.remaining(code, FAR, 0, 2))["second"] == 14
    assert (await reconcile.reconcile_day(container, code, FAR)).repaired_seats == 0


async def test_hold_needs_the_epoch_it_compared_and_skips_a_ticket_given_back(container: Container) -> None:
    code, _ = await open_far_day(container)
    (epoch,) = await container.allocator.epochs([(code, FAR)])
    assert epoch is not None
    assert (
        await container.allocator.hold(code, FAR, [SeatHold("second", 1, 0, 1)], expected_epoch="other") == 0
    )
    await container.allocator.release(code, FAR, 0, 1, [], release_id="cancel:gone")
    given_back = SeatHold("second", 2, 0, 1, ("cancel:gone",))
    assert await container.allocator.hold(code, FAR, [given_back], expected_epoch=epoch) == 0
    assert await container.allocator.hold(code, FAR, [SeatHold("second", 3, 1, 2)], expected_epoch=epoch) == 1
    masks = await second_class(container, code)
    assert masks[1:4] == [0, 0, journey_mask(1, 2)]


async def test_a_release_the_rebuilt_day_already_reflects_frees_nothing(container: Container) -> None:
    """A cancel committed, then the allocator lost the day before the cancel's release landed: the copy
    rebuilt from the database shows the seat free and sells it again; the late release must not free
    the new buyer's seat."""
    code, daily = await open_far_day(container)
    order_id, _ = await sold(container, daily, 0, 0, 3, cancelled=True)
    await container.allocator.drop_day(code, FAR)  # the data loss
    assert await loading.ensure_day_loaded(container, code, FAR)
    again = await container.allocator.allocate(code, FAR, one_seat_request(0, 3), order_id="new-buyer")
    assert again[0].seat_index == 0
    await return_seats_of_orders(container, [order_id])
    assert (await second_class(container, code))[0] == journey_mask(0, 3)


async def test_an_order_of_a_lost_copy_of_its_day_ends_lost_in_failover(container: Container) -> None:
    code, daily = await open_far_day(container)
    old = await container.allocator.allocate(code, FAR, one_seat_request(0, 3), order_id="old")
    stale = await _message(container, daily, [(old[0].seat_index, old[0].seat_name)], old.epoch)
    assert await loading.rebuild_inventory(container, FAR, code) == 1  # the copy that accepted it is gone
    new = await container.allocator.allocate(code, FAR, one_seat_request(0, 3), order_id="new")
    assert new[0].seat_index == old[0].seat_index
    current = await _message(container, daily, [(new[0].seat_index, new[0].seat_name)], new.epoch)

    for _ in range(2):  # a redelivery changes nothing
        outcome = await commit_batch(container, [stale, current])
        assert [m.order_id for m in outcome.failed] == [stale.order_id]
        assert [m.order_id for m in outcome.committed] == [current.order_id]
    lost = await _order(container, stale.order_id)
    assert (lost.status, lost.error_code) == ("FAILURE", "LOST_IN_FAILOVER")
    assert (await _order(container, current.order_id)).status == "SUCCESS"
    # Nothing was given back on the lost order's behalf: the new buyer keeps the seat.
    assert (await second_class(container, code))[new[0].seat_index] == journey_mask(0, 3)
    assert await inventory.check_inventory(container, FAR, code) == []


@pytest.mark.parametrize("store_settings", ["pg"], indirect=True)  # a table lock needs PostgreSQL
async def test_a_rebuild_racing_a_commit_is_repaired_by_the_committer(container: Container) -> None:
    """The committer checked the epoch, then waits in its transaction while the day is rebuilt from a
    snapshot without its orders; once committed it sees the epoch moved and marks the seats held."""
    code, daily = await open_far_day(container)
    got = await container.allocator.allocate(code, FAR, one_seat_request(0, 3), order_id="racing")
    message = await _message(container, daily, [(got[0].seat_index, got[0].seat_name)], got.epoch)
    dsn = container.settings.database_url.replace("postgresql+asyncpg://", "postgresql://")
    lock = psycopg.connect(dsn)
    try:
        # The committer's last insert waits on this lock. Taken from a thread: the session's apps run
        # their outbox relays on this event loop, and one may hold the table until the loop lets it
        # finish its batch (a relay waiting on the lock is not the committer: not counted below).
        await asyncio.to_thread(lock.execute, "LOCK TABLE outbox IN ACCESS EXCLUSIVE MODE")
        committing = asyncio.create_task(commit_batch(container, [message]))
        for _ in range(200):
            waiting = lock.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND datname = current_database() AND query NOT LIKE 'SELECT outbox.id%'"
            ).fetchone()
            if waiting and waiting[0]:
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("the committer never reached its insert")
        assert await loading.rebuild_inventory(container, FAR, code) == 1
        assert (await second_class(container, code))[got[0].seat_index] == 0  # the rebuild did not see it
    finally:
        lock.rollback()
        lock.close()
    outcome = await committing
    assert [m.order_id for m in outcome.committed] == [message.order_id]
    assert (await second_class(container, code))[got[0].seat_index] == journey_mask(0, 3)
    assert await inventory.check_inventory(container, FAR, code) == []


async def test_the_scheduler_reconciles_a_day_loaded_again(container: Container) -> None:
    code, daily = await open_far_day(container)
    reconciler = Reconciler()
    await reconciler.run(container)
    await sold(container, daily, 4, 1, 3)  # committed after the day was (re)loaded without it
    await container.allocator.drop_day(code, FAR)
    await container.allocator.load_day(
        opening.fresh_layout(
            code,
            FAR,
            4,
            [CarriageSpec(1, "business", 2), CarriageSpec(2, "first", 2), CarriageSpec(3, "second", 3)],
        )
    )  # a copy without the ticket, under a new epoch
    assert (await second_class(container, code))[4] == 0
    done = await reconciler.run(container)
    assert done["repaired_seats"] >= 1
    assert (await second_class(container, code))[4] == journey_mask(1, 3)
    assert await inventory.check_inventory(container, FAR, code) == []
