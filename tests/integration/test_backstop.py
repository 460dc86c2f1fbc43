"""The database itself refuses a forged double sale of one seat segment (PostgreSQL exclusion constraint)."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
import sqlalchemy.exc
from sqlalchemy import delete, insert, select, update

from railbook.adapters.db.engine import make_engine
from railbook.adapters.db.models import DailySeat, DailyTrain, Member, Order, Ticket

DATE = dt.date(2030, 1, 1)


async def _seed(conn) -> tuple[int, int, int, str]:  # type: ignore[no-untyped-def]
    code = f"G{uuid.uuid4().int % 90000 + 10000}"
    date = DATE
    member_id = (
        await conn.execute(
            insert(Member)
            .values(mobile=code + "0", name="m", password_hash="x", role="member")
            .returning(Member.id)
        )
    ).scalar_one()
    train_id = (
        await conn.execute(
            insert(DailyTrain)
            .values(train_code=code, kind="G", service_date=date, n_stops=4, carriages=[])
            .returning(DailyTrain.id)
        )
    ).scalar_one()
    seat_id = (
        await conn.execute(
            insert(DailySeat)
            .values(
                daily_train_id=train_id,
                service_date=date,
                seat_class="second",
                seat_index=0,
                carriage=1,
                seat_row=1,
                letter="A",
            )
            .returning(DailySeat.id)
        )
    ).scalar_one()
    order_id = str(uuid.uuid4())
    await conn.execute(
        insert(Order).values(
            id=order_id,
            member_id=member_id,
            daily_train_id=train_id,
            train_code=code,
            service_date=date,
            from_index=0,
            to_index=3,
            from_station="a",
            to_station="d",
            status="SUCCESS",
            request={},
        )
    )
    return member_id, train_id, seat_id, order_id


def _ticket(member_id: int, train_id: int, seat_id: int, order_id: str, a: int, b: int) -> dict[str, object]:
    return dict(
        service_date=DATE,
        id=str(uuid.uuid4()),
        order_id=order_id,
        member_id=member_id,
        passenger_id=1,
        passenger_name="p",
        daily_train_id=train_id,
        daily_seat_id=seat_id,
        seat_class="second",
        seat_index=0,
        seat_name="01-01A",
        from_index=a,
        to_index=b,
        price_fen=100,
        status="UNPAID",
    )


async def test_overlapping_segments_of_one_seat_are_rejected_by_postgresql(pg_url: str) -> None:
    engine = make_engine(pg_url)
    try:
        async with engine.begin() as conn:
            member_id, train_id, seat_id, order_id = await _seed(conn)
            await conn.execute(insert(Ticket).values(**_ticket(member_id, train_id, seat_id, order_id, 0, 2)))
            # Adjacent journey on the same seat: allowed (a seat sold A→B stays on sale B→C).
            await conn.execute(insert(Ticket).values(**_ticket(member_id, train_id, seat_id, order_id, 2, 3)))
        # Overlapping journey on the same seat: the database refuses it, whatever the code above did.
        with pytest.raises(sqlalchemy.exc.IntegrityError, match="ex_ticket_seat_segments"):
            async with engine.begin() as conn:
                await conn.execute(
                    insert(Ticket).values(**_ticket(member_id, train_id, seat_id, order_id, 1, 3))
                )
        # Once the first ticket is refunded its segments are free again.
        async with engine.begin() as conn:
            await conn.execute(
                update(Ticket)
                .where(Ticket.daily_seat_id == seat_id, Ticket.from_index == 0)
                .values(status="REFUNDED")
            )
            await conn.execute(insert(Ticket).values(**_ticket(member_id, train_id, seat_id, order_id, 1, 2)))
            held = (
                await conn.execute(
                    select(Ticket.from_index, Ticket.to_index)
                    .where(Ticket.daily_seat_id == seat_id, Ticket.status == "UNPAID")
                    .order_by(Ticket.from_index)
                )
            ).all()
        assert [tuple(r) for r in held] == [(1, 2), (2, 3)]
        async with engine.begin() as conn:  # leave no forged train-day behind for other tests
            await conn.execute(delete(Order).where(Order.daily_train_id == train_id))
            await conn.execute(delete(DailySeat).where(DailySeat.daily_train_id == train_id))
            await conn.execute(delete(DailyTrain).where(DailyTrain.id == train_id))
    finally:
        await engine.dispose()
