"""Expiry, recovery of unconfirmed releases and the outbox relay against the real PostgreSQL and Redis,
with several workers racing on the same rows."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import func, insert, select

from railbook.adapters.db.models import DailySeat, DailyTrain, Member, Order, Outbox, ProcessedEvent, Ticket
from railbook.adapters.redis.events import STREAM
from railbook.bootstrap import Container
from railbook.config import Settings
from railbook.domain.seating import AllocationRequest, PassengerSeatRequest, class_seats
from railbook.domain.seating import CarriageSpec as Carriage
from railbook.services.after_sale.cancel import expire_unpaid, retry_order_seat_returns
from railbook.services.ports import DayLayout, HeldSeat
from railbook.workers.outbox import claim_stale, consume_once, ensure_group, handle_event, relay_once
from tests.support import JWT_SECRET, container_for, wait_until


@pytest.fixture
async def containers(pg_url: str, redis_url: str) -> AsyncIterator[list[Container]]:
    """Two independent processes' worth of wiring on the same stores."""
    settings = Settings(database_url=pg_url, redis_url=redis_url, jwt_secret=JWT_SECRET)
    async with container_for(settings) as a, container_for(settings) as b:
        yield [a, b]


async def _seed_day(c: Container, *, seats: int = 5) -> tuple[int, int, str, dt.date, list[int]]:
    """A member, a 3-stop train-day with ``seats`` second-class seats (in the database and loaded in
    the allocator): returns member id, daily train id, code, date and the daily seat ids."""
    code = f"G{uuid.uuid4().int % 90000 + 10000}"
    date = dt.date(2030, 1, 1) + dt.timedelta(days=uuid.uuid4().int % 300)
    async with c.sessionmaker() as session, session.begin():
        member_id = (
            await session.execute(
                insert(Member)
                .values(mobile=code + "9", name="m", password_hash="x", role="member")
                .returning(Member.id)
            )
        ).scalar_one()
        daily_id = (
            await session.execute(
                insert(DailyTrain)
                .values(train_code=code, kind="G", service_date=date, n_stops=3, carriages=[])
                .returning(DailyTrain.id)
            )
        ).scalar_one()
        seat_ids = list(
            (
                await session.execute(
                    insert(DailySeat).returning(DailySeat.id),
                    [
                        {
                            "daily_train_id": daily_id,
                            "service_date": date,
                            "seat_class": "second",
                            "seat_index": i,
                            "carriage": 1,
                            "seat_row": 1,
                            "letter": "ABCDF"[i],
                        }
                        for i in range(seats)
                    ],
                )
            ).scalars()
        )
    layout_seats = class_seats([Carriage(1, "second", 1)], "second")[:seats]
    await c.allocator.load_day(DayLayout(code, date, 3, {"second": layout_seats}, {"second": [0] * seats}))
    return member_id, daily_id, code, date, seat_ids


async def _held_order(
    c: Container,
    member_id: int,
    daily_id: int,
    code: str,
    date: dt.date,
    seat_ids: list[int],
    *,
    n: int,
    status: str = "SUCCESS",
    deadline: dt.datetime | None = None,
    updated_at: dt.datetime | None = None,
) -> str:
    """Seats taken in the allocator and the matching order and tickets in the database."""
    order_id = str(uuid.uuid4())
    got = await c.allocator.allocate(
        code, date, AllocationRequest(0, 2, (PassengerSeatRequest("second"),) * n), order_id=order_id
    )
    now = dt.datetime.now(dt.UTC)
    ticket_status = "UNPAID" if status == "SUCCESS" else "CANCELLED"
    async with c.sessionmaker() as session, session.begin():
        await session.execute(
            insert(Order).values(
                id=order_id,
                member_id=member_id,
                daily_train_id=daily_id,
                train_code=code,
                service_date=date,
                from_index=0,
                to_index=2,
                from_station="a",
                to_station="c",
                status=status,
                payment_status="UNPAID",
                total_fen=100 * n,
                request={},
                pay_deadline=deadline or now,
                created_at=now,
                updated_at=updated_at or now,
            )
        )
        await session.execute(
            insert(Ticket),
            [
                {
                    "id": str(uuid.uuid4()),
                    "order_id": order_id,
                    "member_id": member_id,
                    "passenger_id": a.position + 1,
                    "passenger_name": "p",
                    "daily_train_id": daily_id,
                    "service_date": date,
                    "daily_seat_id": seat_ids[a.seat_index],
                    "seat_class": "second",
                    "seat_index": a.seat_index,
                    "seat_name": a.seat_name,
                    "from_index": 0,
                    "to_index": 2,
                    "price_fen": 100,
                    "status": ticket_status,
                }
                for a in got
            ],
        )
    return order_id


async def _remaining_reaches(c: Container, code: str, date: dt.date, expected: int) -> None:
    """Wait until the free count is ``expected`` (a release by another process may still be on its way)."""

    async def reached() -> bool:
        return bool((await c.allocator.remaining(code, date, 0, 2))["second"] == expected)

    await wait_until(reached, timeout=2.0, interval=0.02, what=f"{expected} free seats on {code}")


async def test_two_expiry_workers_expire_each_order_once_and_every_seat_comes_back(
    containers: list[Container],
) -> None:
    a, b = containers
    member_id, daily_id, code, date, seat_ids = await _seed_day(a, seats=5)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
    due = [
        await _held_order(a, member_id, daily_id, code, date, seat_ids, n=1, deadline=past) for _ in range(4)
    ]
    future = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    kept = await _held_order(a, member_id, daily_id, code, date, seat_ids, n=1, deadline=future)
    assert (await a.allocator.remaining(code, date, 0, 2))["second"] == 0

    got_a, got_b = await asyncio.gather(expire_unpaid(a, limit=2), expire_unpaid(b, limit=2))
    rest = await expire_unpaid(a)
    expired = [*got_a, *got_b, *rest]
    # None twice and not the one still in time (an app's expiry loop on the same database may take some).
    assert len(expired) == len(set(expired)) and set(expired) <= set(due)
    await _remaining_reaches(a, code, date, 4)
    async with a.sessionmaker() as session:
        states = dict(
            (await session.execute(select(Order.id, Order.status).where(Order.id.in_([*due, kept])))).all()
        )
        events = Counter(
            (
                await session.execute(
                    select(Outbox.key).where(Outbox.topic == "order.expired", Outbox.key.in_(due))
                )
            ).scalars()
        )
        unreleased = (
            await session.execute(
                select(func.count()).select_from(Order).where(Order.id.in_(due), Order.released_at.is_(None))
            )
        ).scalar_one()
    assert states == {**dict.fromkeys(due, "CANCEL"), kept: "SUCCESS"}
    assert events == Counter(dict.fromkeys(due, 1))
    assert unreleased == 0


async def test_a_cancel_whose_release_was_lost_is_released_again_once(containers: list[Container]) -> None:
    a, b = containers
    member_id, daily_id, code, date, seat_ids = await _seed_day(a)
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    # Committed CANCEL, but the process died before giving the seats back.
    order_id = await _held_order(
        a, member_id, daily_id, code, date, seat_ids, n=2, status="CANCEL", updated_at=long_ago
    )
    assert (await a.allocator.remaining(code, date, 0, 2))["second"] == 3

    await asyncio.gather(retry_order_seat_returns(a), retry_order_seat_returns(b))
    await _remaining_reaches(a, code, date, 5)
    async with a.sessionmaker() as session:
        released = (await session.execute(select(Order.released_at).where(Order.id == order_id))).scalar_one()
    assert released is not None
    # The seats were sold again; a late repeat of the release must not free them a second time.
    await _held_order(a, member_id, daily_id, code, date, seat_ids, n=2)
    async with a.sessionmaker() as session:
        tickets = (await session.execute(select(Ticket).where(Ticket.order_id == order_id))).scalars().all()
    again = [HeldSeat(t.seat_class, t.seat_index) for t in tickets]
    assert await a.allocator.release(code, date, 0, 2, again, release_id=f"cancel:{order_id}") is False
    assert (await a.allocator.remaining(code, date, 0, 2))["second"] == 3


async def test_two_relays_publish_every_outbox_row_exactly_once(containers: list[Container]) -> None:
    a, b = containers
    topic = f"test.{uuid.uuid4().hex[:8]}"
    async with a.sessionmaker() as session, session.begin():
        ids = list(
            (
                await session.execute(
                    insert(Outbox).returning(Outbox.id),
                    [{"topic": topic, "key": str(i), "payload": {"n": i}} for i in range(300)],
                )
            ).scalars()
        )

    async def drain(c: Container) -> int:
        total = 0
        while (n := await relay_once(c, batch=25)) > 0:
            total += n
            await asyncio.sleep(0)
        return total

    await asyncio.gather(drain(a), drain(b), drain(a))
    async with a.sessionmaker() as session:
        unpublished = (
            await session.execute(
                select(func.count())
                .select_from(Outbox)
                .where(Outbox.id.in_(ids), Outbox.published_at.is_(None))
            )
        ).scalar_one()
    assert unpublished == 0
    published: Counter[int] = Counter()
    last = "-"
    while True:
        entries = await a.redis.xrange(STREAM, min=last, max="+", count=1000)
        fresh = [e for e in entries if e[0].decode() != last]
        if not fresh:
            break
        for _entry_id, fields in fresh:
            if fields[b"topic"].decode() == topic:
                published[int(fields[b"id"])] += 1
        last = fresh[-1][0].decode()
    assert published == Counter(dict.fromkeys(ids, 1))


async def test_the_notifications_consumer_handles_each_event_once(containers: list[Container]) -> None:
    a, b = containers
    await ensure_group(a)
    event_id = str(10**9 + uuid.uuid4().int % 10**9)
    event: dict[str, Any] = {"id": event_id, "topic": "order.paid", "key": "k", "payload": json.dumps({})}
    first, second = await asyncio.gather(
        handle_event(a, "notifications", event), handle_event(b, "notifications", event)
    )
    assert sorted([first, second]) == [False, True]
    async with a.sessionmaker() as session:
        rows = (
            await session.execute(
                select(func.count()).select_from(ProcessedEvent).where(ProcessedEvent.event_id == event_id)
            )
        ).scalar_one()
    assert rows == 1
    # Through the stream: published, read by the group, acknowledged.
    await a.redis.xadd(STREAM, {"id": event_id + "1", "topic": "order.paid", "key": "k", "payload": "{}"})
    handled = 0
    for _ in range(20):
        handled += await consume_once(b, consumer_name="test-consumer", block_ms=100)
        async with a.sessionmaker() as session:
            done = (
                await session.execute(
                    select(func.count())
                    .select_from(ProcessedEvent)
                    .where(ProcessedEvent.event_id == event_id + "1")
                )
            ).scalar_one()
        if done:
            break
    assert done == 1


async def test_events_a_dead_consumer_never_acknowledged_are_claimed_and_handled(
    containers: list[Container],
) -> None:
    a, b = containers
    await ensure_group(a)
    event_id = str(3 * 10**9 + uuid.uuid4().int % 10**9)
    await a.redis.xadd(STREAM, {"id": event_id, "topic": "order.paid", "key": "k", "payload": "{}"})
    # A consumer reads everything outstanding, then dies before acknowledging.
    while await a.redis.xreadgroup("notifications", "dead-consumer", {STREAM: ">"}, count=1000):
        pass
    assert (await a.redis.xpending(STREAM, "notifications"))["pending"] >= 1
    await claim_stale(b, consumer_name="heir", min_idle_ms=0)
    while await claim_stale(b, consumer_name="heir", min_idle_ms=0):
        pass
    async with a.sessionmaker() as session:
        done = (
            await session.execute(
                select(func.count()).select_from(ProcessedEvent).where(ProcessedEvent.event_id == event_id)
            )
        ).scalar_one()
    assert done == 1
    pending = await a.redis.xpending_range(
        STREAM, "notifications", min="-", max="+", count=1000, consumername="dead-consumer"
    )
    assert pending == []
