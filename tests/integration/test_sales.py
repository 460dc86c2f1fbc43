"""Opening sale days on the real stores (PostgreSQL + Redis, and SQLite + the in-process allocator)."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from sqlalchemy import func, select

from railbook.adapters.db.models import (
    DailyPairInventory,
    DailySeat,
    DailyTrainStop,
)
from railbook.bootstrap import Container
from railbook.domain.errors import Conflict, InvalidInput
from railbook.domain.pricing import fare_fen
from railbook.domain.seating import CarriageSpec, journey_mask
from railbook.domain.timetable import StopSpec, TrainSpec
from railbook.kit.clock import beijing_today
from railbook.services.catalog import trains
from railbook.services.sales import inventory, loading, opening, window
from railbook.workers.scheduler import LeaderLock, scheduler_tick
from tests.integration.sale_days import FAR, daily_train, new_train, sell_directly
from tests.naming import train_code


async def _counts(c: Container, daily_id: int) -> tuple[int, int, int]:
    async with c.sessionmaker() as session:
        counts = []
        for table in (DailyTrainStop, DailySeat, DailyPairInventory):
            counts.append(
                (
                    await session.execute(
                        select(func.count()).select_from(table).where(table.daily_train_id == daily_id)
                    )
                ).scalar_one()
            )
        return counts[0], counts[1], counts[2]


async def test_opening_a_day_freezes_the_train_and_loads_the_allocator(container: Container) -> None:
    spec = await new_train(container)
    first = await opening.open_sale_days(container, [FAR])
    assert {"date": FAR.isoformat(), "train_code": spec.code} in first["opened"]
    daily = await daily_train(container, spec.code, FAR)
    assert daily.n_stops == 4
    # 4 stops; 6 + 8 + 15 seats; 6 pairs × 3 classes.
    assert await _counts(container, daily.id) == (4, 29, 18)
    assert await container.allocator.is_loaded(spec.code, FAR)
    # No order exists yet, so the day's (empty) duplicate-order markers are complete and trusted.
    _, _, trusted = await container.guard.lookup(1, [1], spec.code, FAR)
    assert trusted
    assert await container.allocator.remaining(spec.code, FAR, 0, 3) == {
        "business": 6,
        "first": 8,
        "second": 15,
    }
    async with container.sessionmaker() as session:
        prices = dict(
            (
                await session.execute(
                    select(DailyPairInventory.seat_class, DailyPairInventory.price_fen).where(
                        DailyPairInventory.daily_train_id == daily.id,
                        DailyPairInventory.from_index == 1,
                        DailyPairInventory.to_index == 3,
                    )
                )
            ).all()
        )
        stop_names = (
            (
                await session.execute(
                    select(DailyTrainStop.station_name)
                    .where(DailyTrainStop.daily_train_id == daily.id)
                    .order_by(DailyTrainStop.stop_index)
                )
            )
            .scalars()
            .all()
        )
    assert prices == {c: fare_fen("G", c, 450) for c in ("business", "first", "second")}
    assert stop_names[1].startswith("乙")  # stop 1 was given by telegraph code; the day keeps its name

    again = await opening.open_sale_days(container, [FAR])
    assert {"date": FAR.isoformat(), "train_code": spec.code} in again["already_open"]
    assert all(o["train_code"] != spec.code for o in again["opened"])
    assert await _counts(container, daily.id) == (4, 29, 18)


async def test_seat_numbering_in_the_database_matches_the_domain(container: Container) -> None:
    spec = await new_train(container)
    await opening.open_sale_days(container, [FAR])
    (layout,) = await container.day_records.layouts(FAR, spec.code)
    fresh = opening.fresh_layout(spec.code, FAR, 4, spec.carriages)
    assert {c: list(s) for c, s in layout.seats.items()} == {c: list(s) for c, s in fresh.seats.items()}
    assert layout.seats["second"][6].name == "03-02B"  # row 1 is A B C D F, then 2A, 2B


async def test_layout_masks_come_from_active_tickets_only(container: Container) -> None:
    spec = await new_train(container)
    await opening.open_sale_days(container, [FAR])
    daily = await daily_train(container, spec.code, FAR)
    await sell_directly(container, daily, 0, 0, 1, ticket_status="PAID")
    await sell_directly(container, daily, 0, 2, 3, ticket_status="UNPAID")
    await sell_directly(container, daily, 1, 0, 3, ticket_status="REFUNDED")
    await sell_directly(container, daily, 2, 1, 2, ticket_status="CHANGED")
    (layout,) = await container.day_records.layouts(FAR, spec.code)
    assert layout.masks["second"][:3] == [journey_mask(0, 1) | journey_mask(2, 3), 0, 0]
    assert set(layout.masks["business"]) == {0}

    counts = await inventory.day_inventory(container, spec.code, FAR)
    second = counts["classes"]["second"]
    assert second["seats"] == 15
    assert second["sold_per_segment"] == [1, 0, 1]
    assert second["remaining"] == {"0-1": 14, "0-2": 14, "0-3": 14, "1-2": 15, "1-3": 14, "2-3": 14}
    assert counts["stations"][0].startswith("甲")

    # The allocator was loaded when nothing was sold: the audit sees the drift, a rebuild cures it.
    drift = await inventory.check_inventory(container, FAR, spec.code)
    assert drift and all(spec.code in line for line in drift)
    assert await loading.rebuild_inventory(container, FAR, spec.code) == 1
    assert await inventory.check_inventory(container, FAR, spec.code) == []
    assert (await container.allocator.remaining(spec.code, FAR, 0, 3))["second"] == 14


async def test_ensure_day_loaded_after_the_allocator_lost_it(container: Container) -> None:
    spec = await new_train(container)
    await opening.open_sale_days(container, [FAR])
    await container.allocator.drop_day(spec.code, FAR)
    assert not await container.allocator.is_loaded(spec.code, FAR)
    assert await loading.ensure_day_loaded(container, spec.code, FAR) is True
    assert await container.allocator.is_loaded(spec.code, FAR)
    assert await loading.ensure_day_loaded(container, spec.code, FAR + dt.timedelta(days=1)) is False


async def test_delete_and_replace_respect_open_days(container: Container) -> None:
    spec = await new_train(container)
    await opening.open_sale_days(container, [FAR])
    with pytest.raises(Conflict) as info:
        await trains.delete_train(container, spec.code, today=beijing_today())
    assert info.value.code == "TRAIN_ON_SALE"
    # Replacing is allowed; the open day keeps its frozen copy.
    shorter = TrainSpec(
        spec.code,
        "G",
        (spec.stops[0], StopSpec(spec.stops[1].station, "08:40", None, 150)),
        (CarriageSpec(1, "second", 1),),
    )
    view = await trains.replace_train(container, spec.code, shorter)
    assert view["seats"] == {"second": 5}
    assert (await daily_train(container, spec.code, FAR)).n_stops == 4
    later = FAR + dt.timedelta(days=1)
    await opening.open_sale_days(container, [later])
    assert (await daily_train(container, spec.code, later)).n_stops == 2
    # Once every open day is in the past, the train can go.
    await trains.delete_train(container, spec.code, today=later + dt.timedelta(days=1))
    with pytest.raises(Exception) as gone:
        await trains.get_train(container, spec.code)
    assert getattr(gone.value, "code", None) == "TRAIN_NOT_FOUND"


async def test_unknown_station_names_the_stop_and_writes_nothing(container: Container) -> None:
    spec = await new_train(container)
    bad = TrainSpec(
        train_code("G"),
        "G",
        (spec.stops[0], StopSpec("无此站", "09:00", None, 100)),
        spec.carriages,
    )
    with pytest.raises(InvalidInput) as info:
        await trains.create_train(container, bad)
    assert info.value.details["stop"] == 1
    with pytest.raises(Exception) as missing:
        await trains.get_train(container, bad.code)
    assert getattr(missing.value, "code", None) == "TRAIN_NOT_FOUND"


async def test_scheduler_tick_opens_the_window_and_leader_lock(container: Container) -> None:
    spec = await new_train(container)
    await scheduler_tick(container)
    for day in window.sale_window(container.settings):
        assert await container.allocator.is_loaded(spec.code, day)
    assert (await scheduler_tick(container))["opened"] == 0
    # The round of the next Beijing day opens (and loads) the window's new last day. (Opened here or
    # already by the scheduler of another app on this database with a longer window: loaded either way.)
    tomorrow = beijing_today() + dt.timedelta(days=1)
    last = window.sale_window(container.settings, tomorrow)[-1]
    await scheduler_tick(container, today=tomorrow)
    assert await container.allocator.is_loaded(spec.code, last)
    assert await container.day_records.open_days(last, spec.code, from_date=None)
    new_last = window.sale_window(container.settings, tomorrow)[-1]
    assert await container.allocator.is_loaded(spec.code, new_last)
    if container.redis is not None:
        key = f"railbook:test-leader:{uuid.uuid4().hex}"
        one, two = LeaderLock(container.redis, key=key), LeaderLock(container.redis, key=key)
        assert await one.hold() is True
        assert await two.hold() is False
        assert await one.hold() is True  # renewal by the holder
        await one.release()
        assert await two.hold() is True
        await two.release()
