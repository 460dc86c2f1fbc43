"""Opening sale days on the real stores (PostgreSQL + Redis, and SQLite + the in-process allocator)."""

from __future__ import annotations

import datetime as dt
import random
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy import func, insert, select

from railbook.adapters.db.models import (
    DailyPairInventory,
    DailySeat,
    DailyTrain,
    DailyTrainStop,
    Member,
    Order,
    Ticket,
)
from railbook.bootstrap import Container, build_container
from railbook.config import Settings
from railbook.domain.errors import Conflict, InvalidInput
from railbook.domain.pricing import fare_fen
from railbook.domain.seating import CarriageSpec, journey_mask
from railbook.domain.timetable import StopSpec, TrainSpec
from railbook.services.catalog import stations, trains
from railbook.services.sales import inventory, loading, opening, window
from railbook.workers.scheduler import LeaderLock, scheduler_tick
from tests.conftest import claimed_redis_db
from tests.naming import station_code, train_code

# Beyond the sale window (and the scheduler running beside these tests), so only this test opens it.
FAR = dt.date.today() + dt.timedelta(days=60)
_rng = random.Random()


@pytest.fixture(scope="module")
def module_redis_url() -> Iterator[str]:
    """A Redis database of this module's own: the session's apps run order committers in the
    background, and they must not consume or acknowledge the streams these tests stage by hand."""
    with claimed_redis_db(1) as url:
        yield url


@pytest.fixture(scope="module", params=["pg", "sqlite"])
def store_settings(request: pytest.FixtureRequest) -> Settings:
    """Both configurations (resolved outside the event loop: creating the databases migrates them)."""
    if request.param == "pg":
        return Settings(
            database_url=request.getfixturevalue("pg_url"),
            redis_url=request.getfixturevalue("module_redis_url"),
            jwt_secret="s" * 40,
            sale_days_ahead=2,
        )
    return Settings(
        database_url=request.getfixturevalue("sqlite_url"), jwt_secret="s" * 40, sale_days_ahead=2
    )


@pytest.fixture(scope="module")
async def container(store_settings: Settings) -> AsyncIterator[Container]:
    c = await build_container(store_settings)
    yield c
    await c.close()


async def _station(c: Container, name: str) -> str:
    """A new station with a free telegraph code; returns the code."""
    for _ in range(50):
        code = station_code()
        try:
            await stations.create_station(c, name=name, code=code)
            return code
        except Conflict:
            continue
    raise AssertionError("no free station code")


async def _train(c: Container) -> TrainSpec:
    """A fresh 4-stop G train with business (3×2), first (4×2) and second (5×3) seats."""
    tag = uuid.uuid4().hex[:6]
    names = [f"甲{tag}", f"乙{tag}", f"丙{tag}", f"丁{tag}"]
    codes = [await _station(c, n) for n in names]
    spec = TrainSpec(
        code=train_code("G"),
        kind="G",
        stops=(
            StopSpec(names[0], None, "08:00", 0),
            StopSpec(codes[1], "08:40", "08:42", 150),
            StopSpec(names[2], "09:30", "09:32", 390),
            StopSpec(names[3], "10:10", None, 600),
        ),
        carriages=(CarriageSpec(1, "business", 2), CarriageSpec(2, "first", 2), CarriageSpec(3, "second", 3)),
    )
    await trains.create_train(c, spec)
    return spec


async def _daily(c: Container, code: str, date: dt.date) -> DailyTrain:
    async with c.sessionmaker() as session:
        row = (
            await session.execute(
                select(DailyTrain).where(DailyTrain.train_code == code, DailyTrain.service_date == date)
            )
        ).scalar_one()
        return row


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
    spec = await _train(container)
    first = await opening.open_sale_days(container, [FAR])
    assert {"date": FAR.isoformat(), "train_code": spec.code} in first["opened"]
    daily = await _daily(container, spec.code, FAR)
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
    spec = await _train(container)
    await opening.open_sale_days(container, [FAR])
    (layout,) = await container.day_records.layouts(FAR, spec.code)
    fresh = opening.fresh_layout(spec.code, FAR, 4, spec.carriages)
    assert {c: list(s) for c, s in layout.seats.items()} == {c: list(s) for c, s in fresh.seats.items()}
    assert layout.seats["second"][6].name == "03-02B"  # row 1 is A B C D F, then 2A, 2B


async def sell_directly(
    c: Container,
    daily: DailyTrain,
    seat_index: int,
    a: int,
    b: int,
    *,
    ticket_status: str = "UNPAID",
    order_status: str = "SUCCESS",
) -> tuple[str, str]:
    """An order of a new member with one second-class ticket, written straight to the database
    (the allocator is not told); returns (order id, ticket id)."""
    order_id, ticket_id = str(uuid.uuid4()), str(uuid.uuid4())
    async with c.sessionmaker() as session, session.begin():
        member_id = (
            await session.execute(
                insert(Member).returning(Member.id),
                [{"mobile": f"17{_rng.randrange(10**8, 10**9)}", "name": "测试", "password_hash": "x"}],
            )
        ).scalar_one()
        await session.execute(
            insert(Order),
            [
                {
                    "id": order_id,
                    "member_id": member_id,
                    "daily_train_id": daily.id,
                    "train_code": daily.train_code,
                    "service_date": daily.service_date,
                    "from_index": a,
                    "to_index": b,
                    "from_station": "x",
                    "to_station": "y",
                    "status": order_status,
                    "request": {},
                    "total_fen": 100,
                }
            ],
        )
        seat_id = (
            await session.execute(
                select(DailySeat.id).where(
                    DailySeat.daily_train_id == daily.id,
                    DailySeat.seat_class == "second",
                    DailySeat.seat_index == seat_index,
                )
            )
        ).scalar_one()
        await session.execute(
            insert(Ticket),
            [
                {
                    "id": ticket_id,
                    "order_id": order_id,
                    "member_id": member_id,
                    "passenger_id": 1,
                    "passenger_name": "测试",
                    "daily_train_id": daily.id,
                    "daily_seat_id": seat_id,
                    "seat_class": "second",
                    "seat_index": seat_index,
                    "seat_name": "03-01A",
                    "from_index": a,
                    "to_index": b,
                    "price_fen": 100,
                    "status": ticket_status,
                }
            ],
        )
    return order_id, ticket_id


async def test_layout_masks_come_from_active_tickets_only(container: Container) -> None:
    spec = await _train(container)
    await opening.open_sale_days(container, [FAR])
    daily = await _daily(container, spec.code, FAR)
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
    spec = await _train(container)
    await opening.open_sale_days(container, [FAR])
    await container.allocator.drop_day(spec.code, FAR)
    assert not await container.allocator.is_loaded(spec.code, FAR)
    assert await loading.ensure_day_loaded(container, spec.code, FAR) is True
    assert await container.allocator.is_loaded(spec.code, FAR)
    assert await loading.ensure_day_loaded(container, spec.code, FAR + dt.timedelta(days=1)) is False


async def test_delete_and_replace_respect_open_days(container: Container) -> None:
    spec = await _train(container)
    await opening.open_sale_days(container, [FAR])
    with pytest.raises(Conflict) as info:
        await trains.delete_train(container, spec.code, today=dt.date.today())
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
    assert (await _daily(container, spec.code, FAR)).n_stops == 4
    later = FAR + dt.timedelta(days=1)
    await opening.open_sale_days(container, [later])
    assert (await _daily(container, spec.code, later)).n_stops == 2
    # Once every open day is in the past, the train can go.
    await trains.delete_train(container, spec.code, today=later + dt.timedelta(days=1))
    with pytest.raises(Exception) as gone:
        await trains.get_train(container, spec.code)
    assert getattr(gone.value, "code", None) == "TRAIN_NOT_FOUND"


async def test_unknown_station_names_the_stop_and_writes_nothing(container: Container) -> None:
    spec = await _train(container)
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
    spec = await _train(container)
    await scheduler_tick(container)
    for day in window.sale_window(container.settings):
        assert await container.allocator.is_loaded(spec.code, day)
    assert (await scheduler_tick(container))["opened"] == 0
    if container.redis is not None:
        key = f"railbook:test-leader:{uuid.uuid4().hex}"
        one, two = LeaderLock(container.redis, key=key), LeaderLock(container.redis, key=key)
        assert await one.hold() is True
        assert await two.hold() is False
        assert await one.hold() is True  # renewal by the holder
        await one.release()
        assert await two.hold() is True
        await two.release()
