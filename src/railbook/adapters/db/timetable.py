"""The timetable catalog on PostgreSQL or SQLite: stations, trains, their stops, carriages and
generated seats."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import delete, func, insert, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from railbook.adapters.db.models import Carriage, DailyTrain, SeatRow, Station, Train, TrainStop
from railbook.domain.seating import SEAT_LETTERS, CarriageSpec
from railbook.domain.timetable import TrainSpec
from railbook.kit.clock import utcnow
from railbook.services.catalog.ports import (
    RecordConflict,
    StationRecord,
    StopRecord,
    TrainRecord,
    TrainSummary,
)


def _station(row: Station) -> StationRecord:
    return StationRecord(row.id, row.name, row.code, row.pinyin, row.city)


def _prefix_pattern(q: str) -> str:
    escaped = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


class SqlTimetableWrite:
    """Statements on the timetable in the caller's transaction."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def station_taken(self, name: str, code: str) -> bool:
        """Whether a station has this name or this telegraph code."""
        taken = (
            await self._session.execute(
                select(Station.id).where(or_(Station.name == name, Station.code == code)).limit(1)
            )
        ).scalar_one_or_none()
        return taken is not None

    async def add_station(self, *, name: str, code: str, pinyin: str, city: str) -> StationRecord:
        """Insert a station."""
        station = Station(name=name, code=code, pinyin=pinyin, city=city)
        self._session.add(station)
        await self._session.flush()
        return _station(station)

    async def station_keys(self) -> list[tuple[str, str]]:
        """(name, telegraph code) of every station."""
        return [(n, c) for n, c in (await self._session.execute(select(Station.name, Station.code))).all()]

    async def add_stations(self, rows: Sequence[dict[str, Any]]) -> None:
        """Insert stations in bulk."""
        await self._session.execute(insert(Station), list(rows))

    async def stations_named(self, keys: Collection[str]) -> list[StationRecord]:
        """The stations whose name or telegraph code is one of ``keys``."""
        rows = (
            (
                await self._session.execute(
                    select(Station).where(or_(Station.name.in_(keys), Station.code.in_(keys)))
                )
            )
            .scalars()
            .all()
        )
        return [_station(row) for row in rows]

    async def train_id(self, code: str) -> int | None:
        """The id of the train with this code, if any."""
        found: int | None = (
            await self._session.execute(select(Train.id).where(Train.code == code))
        ).scalar_one_or_none()
        return found

    async def add_train(self, code: str, kind: str) -> int:
        """Insert a train without stops or carriages; its id."""
        train = Train(code=code, kind=kind)
        self._session.add(train)
        await self._session.flush()
        return train.id

    async def clear_train(self, train_id: int, kind: str) -> None:
        """Remove a train's stops, seats and carriages and set its kind."""
        session = self._session
        await session.execute(delete(TrainStop).where(TrainStop.train_id == train_id))
        await session.execute(
            delete(SeatRow).where(
                SeatRow.carriage_id.in_(select(Carriage.id).where(Carriage.train_id == train_id))
            )
        )
        await session.execute(delete(Carriage).where(Carriage.train_id == train_id))
        train_row = await session.get(Train, train_id)
        assert train_row is not None
        train_row.kind = kind
        train_row.updated_at = utcnow()

    async def write_train_parts(self, train_id: int, spec: TrainSpec, station_ids: Sequence[int]) -> None:
        """Insert the stops, carriages and generated seats of a train (bulk)."""
        session = self._session
        await session.execute(
            insert(TrainStop),
            [
                {
                    "train_id": train_id,
                    "stop_index": i,
                    "station_id": station_ids[i],
                    "arrives": s.arrives,
                    "departs": s.departs,
                    "day": s.day,
                    "km": s.km,
                }
                for i, s in enumerate(spec.stops)
            ],
        )
        carriage_ids = (
            await session.execute(
                insert(Carriage).returning(
                    Carriage.id, Carriage.carriage_index, sort_by_parameter_order=True
                ),
                [
                    {
                        "train_id": train_id,
                        "carriage_index": c.carriage,
                        "seat_class": c.seat_class,
                        "rows": c.rows,
                    }
                    for c in spec.carriages
                ],
            )
        ).all()
        by_index = {index: cid for cid, index in carriage_ids}
        seats = [
            {
                "carriage_id": by_index[c.carriage],
                "seat_row": row,
                "letter": letter,
                "seat_class": c.seat_class,
            }
            for c in spec.carriages
            for row in range(1, c.rows + 1)
            for letter in SEAT_LETTERS[c.seat_class]
        ]
        await session.execute(insert(SeatRow), seats)

    async def open_dates(self, code: str, *, since: dt.date) -> list[dt.date]:
        """The train's open sale days from ``since`` on, in order."""
        return list(
            (
                await self._session.execute(
                    select(DailyTrain.service_date)
                    .where(DailyTrain.train_code == code, DailyTrain.service_date >= since)
                    .order_by(DailyTrain.service_date)
                )
            )
            .scalars()
            .all()
        )

    async def delete_train(self, train_id: int) -> None:
        """Remove a train with its seats, carriages and stops."""
        session = self._session
        await session.execute(
            delete(SeatRow).where(
                SeatRow.carriage_id.in_(select(Carriage.id).where(Carriage.train_id == train_id))
            )
        )
        await session.execute(delete(Carriage).where(Carriage.train_id == train_id))
        await session.execute(delete(TrainStop).where(TrainStop.train_id == train_id))
        await session.execute(delete(Train).where(Train.id == train_id))


class SqlTimetable:
    """The timetable store."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker

    @classmethod
    def over(cls, engine: AsyncEngine) -> SqlTimetable:
        """A store over an engine (for callers that hold a session rather than the container)."""
        return cls(async_sessionmaker(engine, expire_on_commit=False))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[SqlTimetableWrite]:
        """One transaction; a uniqueness violation of the block is raised as ``RecordConflict``."""
        try:
            async with self._sessionmaker() as session, session.begin():
                yield SqlTimetableWrite(session)
        except IntegrityError as exc:
            raise RecordConflict(str(exc.orig)) from exc

    async def find_stations(self, prefix: str | None, *, limit: int) -> list[StationRecord]:
        """Stations whose name, code or pinyin starts with ``prefix`` (all without it), by code."""
        query = select(Station).order_by(Station.code).limit(limit)
        if prefix:
            query = query.where(
                or_(
                    Station.name.like(_prefix_pattern(prefix), escape="\\"),
                    Station.code.like(_prefix_pattern(prefix.upper()), escape="\\"),
                    func.lower(Station.pinyin).like(_prefix_pattern(prefix.lower()), escape="\\"),
                )
            )
        async with self._sessionmaker() as session, session.begin():
            rows = (await session.execute(query)).scalars().all()
        return [_station(s) for s in rows]

    async def train(self, code: str) -> TrainRecord | None:
        """A published train, stops and carriages in order."""
        async with self._sessionmaker() as session, session.begin():
            train = (await session.execute(select(Train).where(Train.code == code))).scalar_one_or_none()
            if train is None:
                return None
            stops = (
                await session.execute(
                    select(TrainStop, Station)
                    .join(Station, Station.id == TrainStop.station_id)
                    .where(TrainStop.train_id == train.id)
                    .order_by(TrainStop.stop_index)
                )
            ).all()
            carriages = (
                (
                    await session.execute(
                        select(Carriage)
                        .where(Carriage.train_id == train.id)
                        .order_by(Carriage.carriage_index)
                    )
                )
                .scalars()
                .all()
            )
        return TrainRecord(
            train.code,
            train.kind,
            tuple(
                StopRecord(station.name, station.code, stop.arrives, stop.departs, stop.day, stop.km)
                for stop, station in stops
            ),
            tuple(CarriageSpec(c.carriage_index, c.seat_class, c.rows) for c in carriages),
        )

    async def train_summaries(self) -> list[TrainSummary]:
        """Every published train with its first and last station and stop count, by code."""
        first = TrainStop.__table__.alias("first_stop")
        last = TrainStop.__table__.alias("last_stop")
        first_station = Station.__table__.alias("first_station")
        last_station = Station.__table__.alias("last_station")
        n_stops = (
            select(
                TrainStop.train_id,
                func.count().label("n"),
                func.max(TrainStop.stop_index).label("last_index"),
            )
            .group_by(TrainStop.train_id)
            .subquery()
        )
        query = (
            select(Train.code, Train.kind, first_station.c.name, last_station.c.name, n_stops.c.n)
            .join(n_stops, n_stops.c.train_id == Train.id)
            .join(first, (first.c.train_id == Train.id) & (first.c.stop_index == 0))
            .join(first_station, first_station.c.id == first.c.station_id)
            .join(last, (last.c.train_id == Train.id) & (last.c.stop_index == n_stops.c.last_index))
            .join(last_station, last_station.c.id == last.c.station_id)
            .order_by(Train.code)
        )
        async with self._sessionmaker() as session, session.begin():
            rows = (await session.execute(query)).all()
        return [TrainSummary(c, k, a, b, n) for c, k, a, b, n in rows]

    async def is_empty(self) -> bool:
        """True when no station and no train has been published yet."""
        async with self._sessionmaker() as session, session.begin():
            stations = (await session.execute(select(func.count()).select_from(Station))).scalar_one()
            trains = (await session.execute(select(func.count()).select_from(Train))).scalar_one()
        return stations == 0 and trains == 0
