"""Sale days in the system of record: the timetable as a day freezes it, and the statements that open
a date (``daily_train`` with its stops, seats and per-pair prices)."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import bindparam, insert, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from railbook.adapters.db.models import (
    Carriage,
    DailyPairInventory,
    DailyTrain,
    DailyTrainStop,
    Station,
    Train,
    TrainStop,
)
from railbook.adapters.db.partitions import prepare_day
from railbook.domain.seating import CarriageSpec
from railbook.services.sales.ports import TimetableTrain

# Seats are numbered per class in (carriage, row, letter) order, which is the order of
# domain.seating.class_seats because every class's letters are listed in sorted order.
_COPY_SEATS = text("""
INSERT INTO daily_seat (daily_train_id, service_date, seat_class, seat_index, carriage, seat_row, letter)
SELECT d.id, d.service_date, s.seat_class,
       row_number() OVER (
           PARTITION BY d.id, s.seat_class ORDER BY c.carriage_index, s.seat_row, s.letter) - 1,
       c.carriage_index, s.seat_row, s.letter
FROM daily_train d
JOIN carriage c ON c.train_id = d.train_id
JOIN seat s ON s.carriage_id = c.id
WHERE d.id IN :ids
""").bindparams(bindparam("ids", expanding=True))

_PAIR_COLUMNS = [
    "daily_train_id",
    "seat_class",
    "from_index",
    "to_index",
    "remaining",
    "price_fen",
    "refreshed_at",
]


def _insert_ignoring_duplicates(session: AsyncSession) -> Any:
    return pg_insert if session.bind.dialect.name == "postgresql" else sqlite_insert


class SqlOpening:
    """The statements of opening one date, in the caller's transaction."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def open_codes(self, date: dt.date) -> set[str]:
        """Codes of the trains already open on ``date``."""
        query = select(DailyTrain.train_code).where(DailyTrain.service_date == date)
        rows = await self._session.execute(query)
        return set(rows.scalars().all())

    async def insert_days(
        self, trains: Sequence[TimetableTrain], date: dt.date, opened_at: dt.datetime
    ) -> dict[str, int]:
        """Insert the train-days, skipping any a concurrent opener won; code -> daily train id."""
        session = self._session
        ins = _insert_ignoring_duplicates(session)(DailyTrain).on_conflict_do_nothing(
            index_elements=["train_code", "service_date"]
        )
        returned = (
            await session.execute(
                ins.returning(DailyTrain.id, DailyTrain.train_code),
                [
                    {
                        "train_id": t.train_id,
                        "train_code": t.code,
                        "kind": t.kind,
                        "service_date": date,
                        "n_stops": len(t.stops),
                        "opened_at": opened_at,
                        "carriages": [
                            {"carriage": c.carriage, "seat_class": c.seat_class, "rows": c.rows}
                            for c in t.carriages
                        ],
                    }
                    for t in trains
                ],
            )
        ).all()
        return {code: daily_id for daily_id, code in returned}

    async def copy_stops(self, rows: Sequence[dict[str, Any]]) -> None:
        """Insert the frozen stops of the new train-days."""
        await self._session.execute(insert(DailyTrainStop), list(rows))

    async def copy_seats(self, daily_train_ids: Sequence[int]) -> None:
        """Copy the timetable's seats into the new train-days in one statement."""
        session = self._session
        if session.bind.dialect.name == "postgresql":
            # JIT compiling this one-off query costs more (about a second) than it saves.
            await session.execute(text("SET LOCAL jit = off"))
        await session.execute(_COPY_SEATS, {"ids": list(daily_train_ids)})

    async def write_pair_inventory(self, rows: list[tuple[Any, ...]]) -> None:
        """Bulk-write per-pair rows: COPY on PostgreSQL, executemany elsewhere."""
        if not rows:
            return
        session = self._session
        if session.bind.dialect.name == "postgresql":
            conn = await session.connection()
            raw = await conn.get_raw_connection()
            await raw.driver_connection.copy_records_to_table(  # type: ignore[union-attr]
                "daily_pair_inventory", records=rows, columns=_PAIR_COLUMNS
            )
            return
        await session.execute(
            insert(DailyPairInventory), [dict(zip(_PAIR_COLUMNS, r, strict=True)) for r in rows]
        )


class SqlSaleDays:
    """The sale-day store on PostgreSQL or SQLite."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker

    async def timetable(self) -> list[TimetableTrain]:
        """Every train with its stops and carriages, by code (fares are the caller's)."""
        async with self._sessionmaker() as session, session.begin():
            trains = {
                row.id: TimetableTrain(row.id, row.code, row.kind)
                for row in (
                    await session.execute(select(Train.id, Train.code, Train.kind).order_by(Train.code))
                ).all()
            }
            stops = await session.execute(
                select(
                    TrainStop.train_id,
                    TrainStop.stop_index,
                    TrainStop.station_id,
                    Station.name,
                    TrainStop.arrives,
                    TrainStop.departs,
                    TrainStop.day,
                    TrainStop.km,
                )
                .join(Station, Station.id == TrainStop.station_id)
                .order_by(TrainStop.train_id, TrainStop.stop_index)
            )
            for r in stops.all():
                trains[r.train_id].stops.append(
                    {
                        "stop_index": r.stop_index,
                        "station_id": r.station_id,
                        "station_name": r.name,
                        "arrives": r.arrives,
                        "departs": r.departs,
                        "day": r.day,
                        "km": r.km,
                    }
                )
            carriages = await session.execute(
                select(
                    Carriage.train_id, Carriage.carriage_index, Carriage.seat_class, Carriage.rows
                ).order_by(Carriage.train_id, Carriage.carriage_index)
            )
            for c in carriages.all():
                trains[c.train_id].carriages.append(CarriageSpec(c.carriage_index, c.seat_class, c.rows))
        return list(trains.values())

    async def prepare_date(self, date: dt.date) -> int:
        """The date's partitions on PostgreSQL (``partitions.prepare_day``); nothing on SQLite."""
        return await prepare_day(self._sessionmaker, date)

    @asynccontextmanager
    async def opening(self) -> AsyncIterator[SqlOpening]:
        """One transaction: commits when the block ends normally, rolls back on an exception."""
        async with self._sessionmaker() as session, session.begin():
            yield SqlOpening(session)
