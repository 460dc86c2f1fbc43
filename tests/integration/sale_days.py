"""Train-days staged straight through the services and the database (no HTTP), shared by the sales and
reconciliation tests: a fresh train, its day opened far ahead, and tickets the allocator is not told of."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import insert, select

from railbook.adapters.db.models import DailySeat, DailyTrain, Member, Order, Ticket
from railbook.bootstrap import Container
from railbook.domain.errors import Conflict
from railbook.domain.seating import AllocationRequest, CarriageSpec, PassengerSeatRequest
from railbook.domain.timetable import StopSpec, TrainSpec
from railbook.kit.clock import beijing_today
from railbook.services.catalog import stations, trains
from railbook.services.sales import opening
from tests.naming import station_code, train_code

# Beyond the sale window (and the scheduler running beside these tests), so only this test opens it.
FAR = beijing_today() + dt.timedelta(days=60)
rng = random.Random()


async def new_station(c: Container, name: str) -> str:
    """A new station with a free telegraph code; returns the code."""
    for _ in range(50):
        code = station_code()
        try:
            await stations.create_station(c, name=name, code=code)
            return code
        except Conflict:
            continue
    raise AssertionError("no free station code")


async def new_train(c: Container) -> TrainSpec:
    """A fresh 4-stop G train with business (3×2), first (4×2) and second (5×3) seats."""
    tag = uuid.uuid4().hex[:6]
    names = [f"甲{tag}", f"乙{tag}", f"丙{tag}", f"丁{tag}"]
    codes = [await new_station(c, n) for n in names]
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


async def daily_train(c: Container, code: str, date: dt.date) -> DailyTrain:
    """The day of train ``code`` on ``date`` as the database holds it."""
    async with c.sessionmaker() as session:
        row = (
            await session.execute(
                select(DailyTrain).where(DailyTrain.train_code == code, DailyTrain.service_date == date)
            )
        ).scalar_one()
        return row


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
                [{"mobile": f"170{rng.randrange(10**8):08d}", "name": "测试", "password_hash": "x"}],
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
                    "service_date": daily.service_date,
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


async def sold(
    c: Container, daily: DailyTrain, seat_index: int, a: int, b: int, *, cancelled: bool = False
) -> tuple[str, str]:
    """An order with one second-class ticket straight in the database; returns (order id, ticket id)."""
    statuses = {"ticket_status": "CANCELLED", "order_status": "CANCEL"} if cancelled else {}
    return await sell_directly(c, daily, seat_index, a, b, **statuses)


def one_seat_request(a: int, b: int) -> AllocationRequest:
    """One passenger, a second-class seat, stops ``a`` to ``b``."""
    return AllocationRequest(a, b, (PassengerSeatRequest("second"),))


async def second_class(c: Container, code: str) -> list[int]:
    """The allocator's second-class seat masks of train ``code`` on FAR."""
    return (await c.allocator.masks(code, FAR))["second"]


async def open_far_day(c: Container) -> tuple[str, DailyTrain]:
    """A new train with its day FAR opened: returns its code and the day."""
    spec = await new_train(c)
    await opening.open_sale_days(c, [FAR])
    return spec.code, await daily_train(c, spec.code, FAR)


@asynccontextmanager
async def committer_running(container: Container, name: str) -> AsyncIterator[None]:
    """A stream committer on this event loop for the block, stopped and awaited when it ends."""
    from railbook.workers.order_worker import run_stream_committer

    stop = asyncio.Event()
    task = asyncio.create_task(run_stream_committer(container, name, stop=stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
