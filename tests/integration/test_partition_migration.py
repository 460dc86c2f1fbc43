"""Migration 0009 on a database that already holds records (upgraded from 0008): every row is moved
into its date's partition, ticket and seat rows gain their service date, the keys and the exclusion
constraint hold on the partitions, the orders stay readable by their (undated) ids, and the
downgrade refuses with a clear message."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from alembic import command
from sqlalchemy import text

from railbook.adapters.db.engine import make_engine, make_sessionmaker
from railbook.adapters.db.migrate import alembic_config
from railbook.adapters.db.orders import DbOrderStore
from railbook.services.booking.order_ids import issue_order_id
from tests.conftest import PG_ADMIN_DSN

D1, D2 = dt.date(2026, 11, 20), dt.date(2027, 1, 10)
O1, O2 = issue_order_id("s" * 40, 1), issue_order_id("s" * 40, 1)  # ids issued before ids carried dates
T1, T2 = str(uuid.uuid4()), str(uuid.uuid4())


@pytest.fixture(scope="module")
def at_0008() -> Iterator[tuple[str, str]]:
    """A database migrated to 0008 holding two train-days, two orders with tickets, a payment and a
    change; yields (asyncpg URL, psycopg DSN)."""
    name = f"railbook_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_DSN.rsplit("/", 1)[0]
    url, dsn = f"{base.replace('postgresql://', 'postgresql+asyncpg://')}/{name}", f"{base}/{name}"
    try:
        command.upgrade(alembic_config(url), "0008")
        with psycopg.connect(dsn) as conn:
            _seed(conn)
        yield url, dsn
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _seed(conn: psycopg.Connection[Any]) -> None:
    now = dt.datetime.now(dt.UTC)
    conn.execute(
        "INSERT INTO member (id, mobile, name, password_hash, role, created_at) "
        "VALUES (1, '13800000000', 'm', 'x', 'member', %s)",
        (now,),
    )
    for day_id, date in ((1, D1), (2, D2)):
        conn.execute(
            "INSERT INTO daily_train (id, train_code, kind, service_date, n_stops, carriages, opened_at) "
            "VALUES (%s, %s, 'G', %s, 3, '[]', %s)",
            (day_id, f"G{day_id}", date, now),
        )
        for seat in range(2):
            conn.execute(
                "INSERT INTO daily_seat (id, daily_train_id, seat_class, seat_index, carriage, seat_row, "
                "letter) VALUES (%s, %s, 'second', %s, 1, 1, %s)",
                (day_id * 10 + seat, day_id, seat, "AB"[seat]),
            )
    conn.execute("SELECT setval('daily_seat_id_seq', 21)")
    for order_id, day_id, date, status in ((O1, 1, D1, "PAID"), (O2, 2, D2, "UNPAID")):
        conn.execute(
            'INSERT INTO "order" (id, member_id, daily_train_id, train_code, service_date, from_index, '
            "to_index, from_station, to_station, status, payment_status, total_fen, request, created_at, "
            "updated_at) VALUES (%s, 1, %s, %s, %s, 0, 2, 'a', 'c', 'SUCCESS', %s, 100, '{}', %s, %s)",
            (order_id, day_id, f"G{day_id}", date, status, now, now),
        )
    for ticket_id, order_id, day_id, status in ((T1, O1, 1, "PAID"), (T2, O2, 2, "UNPAID")):
        conn.execute(
            "INSERT INTO ticket (id, order_id, member_id, passenger_id, passenger_name, daily_train_id, "
            "daily_seat_id, seat_class, seat_index, seat_name, from_index, to_index, price_fen, status, "
            "created_at, updated_at) VALUES (%s, %s, 1, 7, 'p', %s, %s, 'second', 0, '01-01A', 0, 2, 100, "
            "%s, %s, %s)",
            (ticket_id, order_id, day_id, day_id * 10, status, now, now),
        )
    conn.execute(
        "INSERT INTO payment (order_id, provider, provider_ref, kind, amount_fen, status, created_at) "
        "VALUES (%s, 'mock', 'ref-1', 'pay', 100, 'SUCCEEDED', %s)",
        (O1, now),
    )
    conn.execute(
        "INSERT INTO ticket_change (ticket_id, member_id, new_order_id, status, created_at, updated_at) "
        "VALUES (%s, 1, %s, 'DONE', %s, %s)",
        (T1, O2, now, now),
    )


def _one(dsn: str, sql: str, *args: object) -> Any:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(sql, args).fetchone()
    return None if row is None else row[0] if len(row) == 1 else row


async def test_upgrade_moves_every_row_into_its_dates_partition_and_keeps_the_guarantees(
    at_0008: tuple[str, str],
) -> None:
    url, dsn = at_0008
    await asyncio.to_thread(command.upgrade, alembic_config(url), "head")

    for table in ("order", "ticket", "daily_seat"):
        assert _one(dsn, "SELECT relkind::text FROM pg_class WHERE relname = %s", table) == "p", table
    counts = _one(
        dsn,
        'SELECT (SELECT count(*) FROM "order"), (SELECT count(*) FROM ticket), '
        "(SELECT count(*) FROM daily_seat), (SELECT count(*) FROM payment), "
        "(SELECT count(*) FROM ticket_change)",
    )
    assert counts == (2, 2, 4, 1, 1)
    assert _one(dsn, 'SELECT tableoid::regclass::text FROM "order" WHERE id = %s', O1) == "order_p20261120"
    where = "SELECT tableoid::regclass::text || ' ' || service_date FROM {} WHERE id = %s"
    assert _one(dsn, where.format("ticket"), T2) == "ticket_p20270110 2027-01-10"
    assert _one(dsn, where.format("daily_seat"), 11) == "daily_seat_p20261120 2026-11-20"

    with psycopg.connect(dsn) as conn:  # a second sale of seat 10's segment 1 on D1: refused
        with pytest.raises(psycopg.errors.ExclusionViolation, match="ex_ticket_seat_segments_20261120"):
            conn.execute(
                "INSERT INTO ticket (id, order_id, member_id, passenger_id, passenger_name, daily_train_id, "
                "service_date, daily_seat_id, seat_class, seat_index, seat_name, from_index, to_index, "
                "price_fen, status, created_at, updated_at) VALUES ('forged', %s, 1, 8, 'q', 1, %s, 10, "
                "'second', 0, '01-01A', 1, 2, 100, 'UNPAID', now(), now())",
                (O1, D1),
            )
    with psycopg.connect(dsn) as conn:  # a ticket naming an order of another date: refused by the key
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            conn.execute(
                "INSERT INTO ticket (id, order_id, member_id, passenger_id, passenger_name, daily_train_id, "
                "service_date, daily_seat_id, seat_class, seat_index, seat_name, from_index, to_index, "
                "price_fen, status, created_at, updated_at) VALUES ('astray', %s, 1, 8, 'q', 1, %s, 10, "
                "'second', 0, '01-01A', 2, 3, 100, 'UNPAID', now(), now())",
                (O1, D2),
            )
    with psycopg.connect(dsn) as conn:  # the seat sequence goes on from where it was
        new_seat = conn.execute(
            "INSERT INTO daily_seat (daily_train_id, service_date, seat_class, seat_index, carriage, "
            "seat_row, letter) VALUES (1, %s, 'second', 2, 1, 2, 'A') RETURNING id",
            (D1,),
        ).fetchone()
    assert new_seat is not None and new_seat[0] == 22

    engine = make_engine(url)
    try:
        orders = DbOrderStore(make_sessionmaker(engine), engine)
        assert await orders.trip_state(O1, 7) == ("SUCCESS", "PAID")
        assert await orders.trip_state(O2, 7) == ("SUCCESS", "UNPAID")
        async with engine.connect() as conn:
            plan = "\n".join(
                (
                    await conn.execute(
                        text('EXPLAIN SELECT * FROM "order" WHERE id = :i AND service_date = :d'),
                        {"i": O2, "d": D2},
                    )
                ).scalars()
            )
        assert "order_p20270110" in plan and "order_p20261120" not in plan, plan
    finally:
        await engine.dispose()

    with pytest.raises(RuntimeError, match="0009 is one-way on PostgreSQL"):
        await asyncio.to_thread(command.downgrade, alembic_config(url), "0008")
    assert _one(dsn, "SELECT version_num FROM alembic_version") == "0009"
