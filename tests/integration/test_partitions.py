"""The per-day partitions on PostgreSQL (docs/partitions.md): a date's partitions made when its sale
opens, with the exclusion constraint on the new ticket partition; reads by order id and by day that
touch one partition (their EXPLAIN plans name only that date's partitions); and ``railbook archive``
(refusals, export, drop, a second run that finds nothing, a run finished after a crash)."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import os
import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy.exc
from sqlalchemy import event, insert, select, text, update

from railbook.adapters.db.archive import PgDayArchive
from railbook.adapters.db.models import DailyTrain, Member, Order, Payment, Ticket
from railbook.bootstrap import Container
from railbook.config import Settings
from railbook.kit.clock import beijing_today
from railbook.services.booking.order_ids import issue_order_id, order_id_date
from railbook.services.booking.ports import DATED
from railbook.services.sales import opening
from railbook.services.sales.archive import archive_before
from railbook.services.sales.ports import ArchiveRefused
from tests.conftest import claimed_redis_db, fresh_pg_database
from tests.integration.sale_days import FAR, daily_train, new_train, sell_directly
from tests.support import container_for

SECRET = "s" * 40
TODAY = beijing_today()
PAST = TODAY - dt.timedelta(days=10)
LATER_PAST = TODAY - dt.timedelta(days=9)


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    """A database of this module's own: archiving removes every past date's records."""
    with fresh_pg_database() as url:
        yield url


@pytest.fixture(scope="module")
async def c(database: str) -> AsyncIterator[Container]:
    with claimed_redis_db(3) as redis_url:
        settings = Settings(database_url=database, redis_url=redis_url, jwt_secret=SECRET, sale_days_ahead=2)
        async with container_for(settings) as container:
            yield container


async def _partition_of(c: Container, table: str, key: str, value: str) -> str:
    async with c.engine.connect() as conn:
        found = await conn.scalar(
            text(f'SELECT tableoid::regclass::text FROM "{table}" WHERE {key} = :v'), {"v": value}
        )
    return str(found)


async def _plans(c: Container, action: Callable[[], Awaitable[Any]]) -> list[tuple[str, str]]:
    """The statements ``action`` sends that read ``order`` or ``ticket``, each with the plan it runs
    (EXPLAIN ANALYZE with the values it was sent with, in a transaction rolled back)."""
    sent: list[tuple[str, Any]] = []

    def keep(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        if ('"order"' in statement or "ticket" in statement) and not statement.lstrip().startswith("SET"):
            sent.append((statement, parameters))

    event.listen(c.engine.sync_engine, "before_cursor_execute", keep)
    try:
        await action()
    finally:
        event.remove(c.engine.sync_engine, "before_cursor_execute", keep)
    plans = []
    async with c.engine.connect() as conn:
        raw: Any = (await conn.get_raw_connection()).driver_connection
        for statement, parameters in sent:
            transaction = raw.transaction()
            await transaction.start()
            try:
                explain = "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) "
                rows = await raw.fetch(explain + statement, *(parameters or ()))
            finally:
                await transaction.rollback()
            plans.append((statement, "\n".join(r[0] for r in rows)))
    return plans


def _partitions_read(plan: str) -> set[str]:
    """The partitions a plan read (its scans name them; a scan that never ran is left out)."""
    return {
        name
        for line in plan.splitlines()
        if "never executed" not in line
        for name in re.findall(r" on ((?:order|ticket|daily_seat)_(?:p\d{8}|default))\b", line)
    }


async def _dated_order(c: Container, daily: DailyTrain, seat_index: int, order_id: str) -> int:
    """An unpaid order of a new member under ``order_id`` with one ticket; returns the member."""
    async with c.sessionmaker() as session, session.begin():
        member_id = (
            await session.execute(
                insert(Member).returning(Member.id),
                [{"mobile": f"171{uuid.uuid4().int % 10**8:08d}", "name": "测试", "password_hash": "x"}],
            )
        ).scalar_one()
        seat_id = await session.scalar(
            text(
                "SELECT id FROM daily_seat WHERE daily_train_id = :t AND service_date = :d "
                "AND seat_class = 'second' AND seat_index = :i"
            ),
            {"t": daily.id, "d": daily.service_date, "i": seat_index},
        )
        await session.execute(
            insert(Order).values(
                id=order_id,
                member_id=member_id,
                daily_train_id=daily.id,
                train_code=daily.train_code,
                service_date=daily.service_date,
                from_index=0,
                to_index=2,
                from_station="x",
                to_station="y",
                status="SUCCESS",
                payment_status="UNPAID",
                request={"passengers": [{"passenger_id": 1}]},
                total_fen=100,
                pay_deadline=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=30),
            )
        )
        await session.execute(
            insert(Ticket).values(
                id=str(uuid.uuid4()),
                order_id=order_id,
                member_id=member_id,
                passenger_id=1,
                passenger_name="测试",
                daily_train_id=daily.id,
                service_date=daily.service_date,
                daily_seat_id=seat_id,
                seat_class="second",
                seat_index=seat_index,
                seat_name="03-01A",
                from_index=0,
                to_index=2,
                price_fen=100,
                status="UNPAID",
            )
        )
    return member_id


async def test_opening_a_date_makes_its_partitions_and_the_new_ticket_partition_refuses_a_double_sale(
    c: Container,
) -> None:
    spec = await new_train(c)
    await opening.open_sale_days(c, [FAR])
    daily = await daily_train(c, spec.code, FAR)
    order_id, ticket_id = await sell_directly(c, daily, 0, 0, 2)
    suffix = f"{FAR:%Y%m%d}"
    assert await _partition_of(c, "ticket", "id", ticket_id) == f"ticket_p{suffix}"
    assert await _partition_of(c, "order", "id", order_id) == f"order_p{suffix}"
    with pytest.raises(sqlalchemy.exc.IntegrityError, match=f"ex_ticket_seat_segments_{suffix}"):
        await sell_directly(c, daily, 0, 1, 3)
    await sell_directly(c, daily, 0, 2, 3)  # the next segment of the same seat is still for sale
    assert await c.sale_days.prepare_date(FAR) == 0, "a second opening makes nothing"


async def test_reads_by_order_id_and_by_day_touch_one_partition(c: Container) -> None:
    spec = await new_train(c)
    other = FAR + dt.timedelta(days=1)
    await opening.open_sale_days(c, [FAR, other])
    daily = await daily_train(c, spec.code, FAR)
    order_id = issue_order_id(SECRET, 0, FAR)
    member_id = await _dated_order(c, daily, 1, order_id)
    ours = {f"{t}_p{FAR:%Y%m%d}" for t in ("order", "ticket", "daily_seat")}

    async def pay_lock() -> None:
        async with c.payments.transaction() as tx:
            assert await tx.lock_to_pay(order_id, member_id, "key-1") is not None

    async def cancel() -> None:  # the order and ticket rows written back by the ORM
        async with c.cancellations.transaction() as tx:
            assert await tx.lock_order(order_id, member_id) is not None
            await tx.cancel_order(order_id, now=dt.datetime.now(dt.UTC))

    actions: list[Callable[[], Awaitable[Any]]] = [
        lambda: c.order_reads.committed(member_id, [order_id]),
        lambda: c.orders.trip_state(order_id, 1),
        pay_lock,
        lambda: c.day_records.holders(spec.code, FAR, with_releases=True),
        cancel,
    ]
    for action in actions:
        plans = await _plans(c, action)
        assert plans, "no statement read the per-day tables"
        for statement, plan in plans:
            read = _partitions_read(plan)
            assert read and read <= ours, f"{statement}\n{plan}"


async def test_an_order_whose_id_only_looks_dated_is_still_found(c: Container) -> None:
    spec = await new_train(c)
    await opening.open_sale_days(c, [FAR])
    daily = await daily_train(c, spec.code, FAR)
    raw = bytearray(uuid.UUID(issue_order_id(SECRET, 0)).bytes)
    raw[9], raw[10:12] = DATED, (9000).to_bytes(2, "big")  # "dated" 2024-08-22, sold for FAR
    order_id = str(uuid.UUID(bytes=bytes(raw)))
    member_id = await _dated_order(c, daily, 2, order_id)
    assert order_id_date(order_id) != FAR
    found = await c.order_reads.committed(member_id, [order_id])
    assert found[order_id].train_code == spec.code
    assert await c.orders.trip_state(order_id, 1) == ("SUCCESS", "UNPAID")


def _railbook(database: str, *args: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RAILBOOK_")}
    env = {**environ, "RAILBOOK_DATABASE_URL": database, "RAILBOOK_LOG_LEVEL": "warning"}
    return subprocess.run(
        [sys.executable, "-m", "railbook.cli", "archive", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


async def test_archive_refuses_then_exports_and_drops_past_dates_once(
    c: Container, database: str, tmp_path: Path
) -> None:
    spec = await new_train(c)
    await opening.open_sale_days(c, [PAST, LATER_PAST, FAR])
    past, later = await daily_train(c, spec.code, PAST), await daily_train(c, spec.code, LATER_PAST)
    paid, paid_ticket = await sell_directly(c, past, 0, 0, 3, ticket_status="PAID")
    async with c.sessionmaker() as session, session.begin():
        await session.execute(update(Order).where(Order.id == paid).values(payment_status="PAID"))
        session.add(
            Payment(
                order_id=paid, provider="mock", provider_ref=f"r-{paid}", amount_fen=100, status="SUCCEEDED"
            )
        )
    unpaid, _ = await sell_directly(c, later, 0, 0, 3)
    async with c.sessionmaker() as session, session.begin():
        await session.execute(update(Order).where(Order.id == unpaid).values(payment_status="UNPAID"))
    before = (LATER_PAST + dt.timedelta(days=1)).isoformat()
    out = tmp_path / "archive"

    refused = _railbook(database, "--before", before, "--out", str(out))
    assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert f"order {unpaid} is not final (SUCCESS/UNPAID)" in refused.stderr
    assert await _partition_of(c, "order", "id", paid) == f"order_p{PAST:%Y%m%d}", "refused: nothing moved"
    assert not out.exists()

    async with c.sessionmaker() as session, session.begin():
        await session.execute(
            update(Order)
            .where(Order.id == unpaid)
            .values(status="CANCEL", released_at=dt.datetime.now(dt.UTC))
        )
        await session.execute(update(Ticket).where(Ticket.order_id == unpaid).values(status="CANCELLED"))
    done = _railbook(database, "--before", before, "--out", str(out))
    assert done.returncode == 0, done.stderr
    line = next(x for x in done.stdout.splitlines() if x.startswith(PAST.isoformat()))
    assert all(f"{table} 1," in line for table in ("order", "ticket", "payment")), line

    orders = _rows(out / PAST.isoformat() / "order.csv")
    assert [(r["id"], r["status"], r["payment_status"]) for r in orders] == [(paid, "SUCCESS", "PAID")]
    assert [r["id"] for r in _rows(out / PAST.isoformat() / "ticket.csv")] == [paid_ticket]
    assert [r["order_id"] for r in _rows(out / PAST.isoformat() / "payment.csv")] == [paid]
    assert spec.code in [r["train_code"] for r in _rows(out / PAST.isoformat() / "daily_train.csv")]
    assert len(_rows(out / LATER_PAST.isoformat() / "ticket.csv")) == 1
    async with c.engine.connect() as conn:
        names = f"_p({PAST:%Y%m%d}|{LATER_PAST:%Y%m%d})$"
        left = await conn.scalar(text("SELECT count(*) FROM pg_class WHERE relname ~ :p"), {"p": names})
        days = await conn.scalar(select(DailyTrain.id).where(DailyTrain.service_date < TODAY).limit(1))
        far = await conn.scalar(select(DailyTrain.id).where(DailyTrain.service_date == FAR).limit(1))
    assert left == 0 and days is None and far is not None

    again = _railbook(database, "--before", before, "--out", str(out))
    assert again.returncode == 0 and "nothing to archive" in again.stdout, again.stderr


async def test_archive_finishes_a_date_left_detached_and_refuses_bad_input(
    c: Container, database: str, tmp_path: Path, sqlite_url: str
) -> None:
    spec = await new_train(c)
    await opening.open_sale_days(c, [PAST])
    daily = await daily_train(c, spec.code, PAST)
    order_id, ticket_id = await sell_directly(
        c, daily, 3, 1, 2, order_status="CANCEL", ticket_status="CANCELLED"
    )
    async with c.sessionmaker() as session, session.begin():
        await session.execute(
            update(Order).where(Order.id == order_id).values(released_at=dt.datetime.now(dt.UTC))
        )
    store = PgDayArchive(c.engine)
    await store.detach(PAST, TODAY)  # then the process died: the tables are detached, not exported
    assert await _partition_of(c, "ticket", "id", ticket_id) == "None"
    done = await archive_before(store, before=PAST + dt.timedelta(days=1), out=tmp_path, today=TODAY)
    assert done[PAST]["ticket"] == 1
    assert [r["id"] for r in _rows(tmp_path / PAST.isoformat() / "ticket.csv")] == [ticket_id]
    assert await archive_before(store, before=PAST + dt.timedelta(days=1), out=tmp_path, today=TODAY) == {}

    with pytest.raises(ArchiveRefused, match="still on sale"):
        await archive_before(store, before=TODAY + dt.timedelta(days=1), out=tmp_path, today=TODAY)
    bad = _railbook(database, "--before", "2026-13-01")
    assert bad.returncode == 1 and bad.stderr.strip().splitlines() == [
        "railbook: --before '2026-13-01' is not a date (YYYY-MM-DD)"
    ]
    embedded = _railbook(sqlite_url, "--before", "2026-01-01")
    assert embedded.returncode == 1 and "archive needs PostgreSQL" in embedded.stderr
    assert len(embedded.stderr.strip().splitlines()) == 1


async def test_a_date_opens_after_a_write_transaction_that_held_its_locks_ends(c: Container) -> None:
    """Attaching the ticket partition waits for open writes on ``order``; under the short lock
    timeout it gives up and tries again, so it neither stalls the order path nor fails the opening."""
    date = FAR + dt.timedelta(days=30)
    async with c.engine.connect() as holder:
        await holder.execute(text('LOCK TABLE "order" IN ROW EXCLUSIVE MODE'))  # what an insert holds
        opening_task = asyncio.create_task(c.sale_days.prepare_date(date))
        await asyncio.sleep(1.2)  # more than two lock timeouts
        assert not opening_task.done()
        await holder.rollback()
    assert await asyncio.wait_for(opening_task, 10) == 3
    assert await _partition_of_date(c, date) == f"ticket_p{date:%Y%m%d}"


async def _partition_of_date(c: Container, date: dt.date) -> str:
    async with c.engine.connect() as conn:
        found = await conn.scalar(
            text(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = 'ticket'::regclass AND c.relname = :n"
            ),
            {"n": f"ticket_p{date:%Y%m%d}"},
        )
    return str(found)
