"""The network as search reads it: stations, open train-days, and the route index (the self-join of
``daily_train_stop``). Read-only; each call is one session and the statements named beside it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlalchemy import and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased

from railbook.adapters.db.models import DailyPairInventory, DailyTrain, DailyTrainStop, Station
from railbook.domain.timetable import departure_day
from railbook.services.search.ports import Catalog, DayInfo, LegRow, OpenDay, StationRef


class RouteRepository:
    """Stations, train-days and route legs for search, over the process's session factory."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self.sessionmaker = sessionmaker

    async def catalog_version(self) -> tuple[int, int]:
        """Newest station id and newest train-day id: one statement."""
        async with self.sessionmaker() as session:
            return await _catalog_version(session)

    async def catalog(self, since: dt.date) -> Catalog:
        """Version, stations and train-days from ``since`` on: three statements in one session."""
        async with self.sessionmaker() as session:
            version = await _catalog_version(session)
            stations = (
                await session.execute(
                    select(Station.id, Station.name, Station.code, Station.city, Station.pinyin)
                )
            ).all()
            days = (
                await session.execute(
                    select(DailyTrain.id, DailyTrain.train_code, DailyTrain.service_date).where(
                        DailyTrain.service_date >= since
                    )
                )
            ).all()
        return Catalog(
            version,
            [StationRef(s.id, s.name, s.code, s.city or "", s.pinyin or "") for s in stations],
            [OpenDay(d.id, d.train_code, d.service_date) for d in days],
        )

    async def stations_named(self, term: str) -> tuple[StationRef, ...]:
        """Stations whose name, code or city is ``term``: one statement."""
        async with self.sessionmaker() as session:
            rows = (
                await session.execute(
                    select(Station.id, Station.name, Station.code, Station.city)
                    .where(or_(Station.name == term, Station.code == term, Station.city == term))
                    .order_by(Station.id)
                )
            ).all()
        return tuple(StationRef(r.id, r.name, r.code, r.city or "") for r in rows)

    async def route_legs(
        self, dates: Sequence[dt.date], from_ids: Sequence[int] | None, to_ids: Sequence[int] | None
    ) -> list[LegRow]:
        """One statement: the self-join of the days' stops on (service_date, station_id), with prices."""
        a = aliased(DailyTrainStop)
        b = aliased(DailyTrainStop)
        p = DailyPairInventory
        q = (
            select(
                a.daily_train_id,
                DailyTrain.train_code,
                DailyTrain.kind,
                a.stop_index.label("fi"),
                a.station_name.label("fs"),
                a.departs.label("dep"),
                a.arrives.label("fa"),
                a.day.label("fday"),
                a.km.label("fkm"),
                b.stop_index.label("ti"),
                b.station_name.label("ts"),
                b.arrives.label("arr"),
                b.day.label("tday"),
                b.km.label("tkm"),
                p.seat_class,
                p.price_fen,
                a.service_date,
            )
            .join(
                b,
                and_(b.daily_train_id == a.daily_train_id, b.stop_index > a.stop_index),
            )
            .join(DailyTrain, DailyTrain.id == a.daily_train_id)
            .outerjoin(
                p,
                and_(
                    p.daily_train_id == a.daily_train_id,
                    p.from_index == a.stop_index,
                    p.to_index == b.stop_index,
                ),
            )
            .where(a.service_date.in_(list(dates)))
        )
        if from_ids is not None:
            q = q.where(a.station_id.in_(list(from_ids)))
        if to_ids is not None:
            q = q.where(b.station_id.in_(list(to_ids)))
        async with self.sessionmaker() as session:
            rows = (await session.execute(q)).all()
        return [LegRow(*r) for r in rows]

    async def train_day(self, train_code: str, date: dt.date) -> DayInfo | None:
        """A train-day and its stops: two statements in one session."""
        async with self.sessionmaker() as session:
            daily = (
                await session.execute(
                    select(DailyTrain).where(
                        DailyTrain.train_code == train_code, DailyTrain.service_date == date
                    )
                )
            ).scalar_one_or_none()
            if daily is None:
                return None
            stops = (
                await session.execute(
                    select(
                        DailyTrainStop.station_id,
                        DailyTrainStop.station_name,
                        DailyTrainStop.departs,
                        DailyTrainStop.arrives,
                        DailyTrainStop.day,
                    )
                    .where(DailyTrainStop.daily_train_id == daily.id)
                    .order_by(DailyTrainStop.stop_index)
                )
            ).all()
        classes = frozenset(str(c.get("seat_class")) for c in daily.carriages or [])
        return DayInfo(
            daily.id,
            daily.train_code,
            daily.kind,
            tuple((s[0], s[1]) for s in stops),
            classes,
            daily.service_date,
            tuple(s.day if s.departs is None else departure_day(s.departs, s.arrives, s.day) for s in stops),
        )


async def _catalog_version(session: AsyncSession) -> tuple[int, int]:
    """Newest station id and newest train-day id: two index lookups in one statement."""
    row = (
        await session.execute(
            select(
                select(func.max(Station.id)).scalar_subquery(),
                select(func.max(DailyTrain.id)).scalar_subquery(),
            )
        )
    ).one()
    return int(row[0] or 0), int(row[1] or 0)
