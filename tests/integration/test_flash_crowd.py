"""A flash crowd on one train-day: hundreds of concurrent orders over random journeys, through the real
app — distributed (PostgreSQL + Redis, 100 seats) and embedded (SQLite, in-process allocator and queue,
40 seats) — then audits of the system of record against the allocator."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from railbook.adapters.db.migrate import upgrade
from railbook.adapters.db.models import DailySeat, DailyTrain, Member, Order, Passenger, Ticket
from railbook.api.deps import issue_token
from tests.support import admin, app_client, app_settings, make_train_day, wait_until

pytestmark = pytest.mark.slow

N_STOPS = 5
ROWS = 20  # one second-class carriage: 100 seats
MEMBERS = 300
ORDERS_PER_MEMBER = 2


EMBEDDED_ROWS = 8  # 40 seats
EMBEDDED_MEMBERS = 100  # 200 orders


@pytest.fixture(scope="module")
async def distributed_client(pg_url: str, redis_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The distributed configuration."""
    async with app_client(app_settings(pg_url, redis_url), request_timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def crowd_sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A migrated SQLite file of this module's own (migrations run outside the event loop)."""
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('crowd') / 'railbook.db'}"
    upgrade(url)
    return url


@pytest.fixture(scope="module")
async def embedded_client(crowd_sqlite_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The embedded configuration (its shutdown must finish, too: LifespanManager times out if not)."""
    async with app_client(app_settings(crowd_sqlite_url, None), request_timeout=60) as client:
        yield client


async def _members(container: Any, n: int) -> list[tuple[dict[str, str], list[int]]]:
    """``n`` members with two passengers each, written directly (registration is not under test)."""
    out = []
    tag = random.randrange(10**5)
    async with container.sessionmaker() as session, session.begin():
        members = [Member(mobile=f"170{tag:05d}{k:03d}", name="乘客", password_hash="x") for k in range(n)]
        session.add_all(members)
        await session.flush()
        passengers = [
            # The crowd's own people (the tag as region): trips are checked by ID number.
            [Passenger(member_id=m.id, name="张三", id_card=f"{tag:06d}19900101{k:03d}{j}") for j in range(2)]
            for k, m in enumerate(members)
        ]
        session.add_all([p for ps in passengers for p in ps])
        await session.flush()
        for m, ps in zip(members, passengers, strict=True):
            token, _ = issue_token(container, m.id, "member")
            out.append(({"Authorization": f"Bearer {token}"}, [p.id for p in ps]))
    return out


async def _drain(container: Any, daily_train_id: int, accepted: int) -> None:
    """Wait until every accepted order of the day is in the database."""

    async def committed() -> bool:
        async with container.sessionmaker() as session:
            n = (
                await session.execute(
                    select(func.count()).select_from(Order).where(Order.daily_train_id == daily_train_id)
                )
            ).scalar_one()
        return bool(n >= accepted)

    await wait_until(committed, timeout=30, what=f"all {accepted} accepted orders to be committed")


async def test_flash_crowd_sells_exactly_the_capacity(distributed_client: httpx.AsyncClient) -> None:
    await _flash_crowd(distributed_client, rows=ROWS, members=MEMBERS)


async def test_embedded_flash_crowd_sells_exactly_the_capacity(embedded_client: httpx.AsyncClient) -> None:
    await _flash_crowd(embedded_client, rows=EMBEDDED_ROWS, members=EMBEDDED_MEMBERS)


async def _flash_crowd(client: httpx.AsyncClient, *, rows: int, members: int) -> None:
    """Concurrent orders (two per member) on a one-carriage train-day, a sweep to sell every segment,
    then the audit: final states, no seat segment twice, capacity per segment, allocator == database."""
    container = client.app.state.container  # type: ignore[attr-defined]
    day = await make_train_day(client, await admin(client), rows=rows, stops=N_STOPS, days_ahead=5)
    names = [s[0] for s in day["stations"]]
    crowd = await _members(container, members)
    rng = random.Random(7)

    def body(i: int, j: int, pids: list[int]) -> dict[str, Any]:
        return {
            "date": day["date"],
            "train_code": day["train_code"],
            "from": names[i],
            "to": names[j],
            "passengers": [{"passenger_id": p, "seat_class": "second"} for p in pids],
        }

    async def one(headers: dict[str, str], pids: list[int]) -> httpx.Response:
        i = rng.randrange(N_STOPS - 1)
        j = rng.randrange(i + 1, N_STOPS)
        return await client.post("/api/v1/orders", json=body(i, j, pids), headers=headers)

    # Each member sends two orders at once, one per passenger (two passengers per order would be
    # refused as duplicates of each other): 2 × members concurrent orders for 5 × rows seats.
    jobs = [one(h, [p]) for h, pids in crowd for p in pids[:ORDERS_PER_MEMBER]]
    answers = await asyncio.gather(*jobs)
    codes: dict[int, int] = {}
    for r in answers:
        codes[r.status_code] = codes.get(r.status_code, 0) + 1
        if r.status_code != 202:
            assert r.status_code == 409 and r.json()["error"]["code"] == "SOLD_OUT", r.text
    accepted = [r.json()["order_id"] for r in answers if r.status_code == 202]
    assert codes.get(409, 0) > 0 and len(accepted) >= rows * 5 // (N_STOPS - 1)

    async with container.sessionmaker() as session:
        daily_id = (
            await session.execute(
                select(DailyTrain.id).where(
                    DailyTrain.train_code == day["train_code"],
                    DailyTrain.service_date == dt.date.fromisoformat(day["date"]),
                )
            )
        ).scalar_one()
    await _drain(container, daily_id, len(accepted))

    # Sweep: single-segment orders until each segment is sold out, so every segment must end full.
    pool = iter([(h, p) for h, pids in await _members(container, 200) for p in pids])
    sweep = []
    for k in range(N_STOPS - 1):
        while True:
            headers, pid = next(pool)
            r = await client.post("/api/v1/orders", json=body(k, k + 1, [pid]), headers=headers)
            if r.status_code == 409:
                assert r.json()["error"]["code"] == "SOLD_OUT", r.text
                break
            assert r.status_code == 202, r.text
            sweep.append(r.json()["order_id"])
    await _drain(container, daily_id, len(accepted) + len(sweep))

    async with container.sessionmaker() as session:
        orders = dict(
            (
                await session.execute(select(Order.id, Order.status).where(Order.daily_train_id == daily_id))
            ).all()
        )
        tickets = (
            await session.execute(
                select(Ticket.daily_seat_id, Ticket.from_index, Ticket.to_index, Ticket.order_id).where(
                    Ticket.daily_train_id == daily_id, Ticket.status.in_(["UNPAID", "PAID"])
                )
            )
        ).all()
        seats = {
            sid: (cls, idx)
            for sid, cls, idx in (
                await session.execute(
                    select(DailySeat.id, DailySeat.seat_class, DailySeat.seat_index).where(
                        DailySeat.daily_train_id == daily_id
                    )
                )
            ).all()
        }

    # Every accepted order reached a final state; none is left pending, none doubled.
    assert set(orders) == set(accepted) | set(sweep)
    assert set(orders.values()) <= {"SUCCESS", "EMPTY", "FAILURE"}
    assert list(orders.values()).count("SUCCESS") == len(orders)  # no seat conflict reached the database
    assert {t.order_id for t in tickets} == set(orders)

    # No seat segment held twice; every segment sold exactly the capacity.
    masks: dict[int, int] = {}
    for sid, i, j, _ in tickets:
        bits = ((1 << (j - i)) - 1) << i
        assert masks.get(sid, 0) & bits == 0, f"seat {sid} sold twice"
        masks[sid] = masks.get(sid, 0) | bits
    sold = [sum(1 for m in masks.values() if m >> k & 1) for k in range(N_STOPS - 1)]
    assert sold == [rows * 5] * (N_STOPS - 1)

    # The allocator agrees with the system of record, seat by seat.
    fast = await container.allocator.masks(day["train_code"], dt.date.fromisoformat(day["date"]))
    from_db = [0] * len(seats)
    for sid, m in masks.items():
        from_db[seats[sid][1]] = m
    assert fast["second"] == from_db
