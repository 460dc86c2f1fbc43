"""Waitlist entries: joining, claiming an entry to fill it, settling it, and the sweeps."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

from sqlalchemy import Select, and_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from railbook.adapters.db.models import DailyTrain, DailyTrainStop, Member, Passenger, Waitlist
from railbook.adapters.db.payments import OutboxTx
from railbook.adapters.db.refunds import stop_time
from railbook.domain.timetable import boarding_date, departure_day
from railbook.services.after_sale.ports import StopTime, WaitlistEntry


def _with_boarding() -> Select[Any]:
    """Entries with their boarding stop's times (the train-day's stop named ``from_station``), in the
    same statement: an entry is shown under the passenger's boarding date (API.md)."""
    return (
        select(Waitlist, DailyTrainStop.departs, DailyTrainStop.arrives, DailyTrainStop.day)
        .outerjoin(
            DailyTrain,
            and_(
                DailyTrain.train_code == Waitlist.train_code,
                DailyTrain.service_date == Waitlist.service_date,
            ),
        )
        .outerjoin(
            DailyTrainStop,
            and_(
                DailyTrainStop.daily_train_id == DailyTrain.id,
                DailyTrainStop.station_name == Waitlist.from_station,
            ),
        )
    )


def _boarded_entry(row: Any) -> WaitlistEntry:
    """An entry read by ``_with_boarding``."""
    w, departs, arrives, day = row
    entry = _entry(w)
    if departs is None:
        return entry
    boarding = boarding_date(w.service_date, departure_day(departs, arrives, day or 0))
    return replace(entry, boarding_date=boarding)


def _entry(w: Waitlist) -> WaitlistEntry:
    return WaitlistEntry(
        id=w.id,
        member_id=w.member_id,
        train_code=w.train_code,
        service_date=w.service_date,
        from_station=w.from_station,
        to_station=w.to_station,
        passengers=list(w.passengers),
        status=w.status,
        order_id=w.order_id,
        error_code=w.error_code,
        created_at=w.created_at,
        deadline=w.deadline,
    )


class WaitlistTx(OutboxTx):
    """The statements of one waitlist transaction."""

    async def waiting_count(self, member_id: int, *, status: str, limit: int) -> int:
        """How many of the member's entries are in this status, counted up to ``limit``."""
        return len(
            (
                await self.session.execute(
                    select(Waitlist.id)
                    .where(Waitlist.member_id == member_id, Waitlist.status == status)
                    .limit(limit)
                )
            ).all()
        )

    async def lock_member(self, member_id: int) -> None:
        """Serialise this member's joins until the commit (``FOR UPDATE`` on the member row; SQLite's
        write transaction already serialises them)."""
        await self.session.execute(select(Member.id).where(Member.id == member_id).with_for_update())

    async def passengers_waiting(
        self, member_id: int, train_code: str, service_date: dt.date, *, statuses: Sequence[str]
    ) -> set[int]:
        """The passengers of the member's entries in these statuses for this train-day."""
        rows = (
            await self.session.execute(
                select(Waitlist.passengers).where(
                    Waitlist.member_id == member_id,
                    Waitlist.train_code == train_code,
                    Waitlist.service_date == service_date,
                    Waitlist.status.in_(statuses),
                )
            )
        ).scalars()
        return {int(str(p["passenger_id"])) for passengers in rows for p in passengers}

    async def add_entry(
        self,
        *,
        member_id: int,
        train_code: str,
        service_date: dt.date,
        from_station: str,
        to_station: str,
        passengers: list[dict[str, object]],
        status: str,
        deadline: dt.datetime,
        now: dt.datetime,
    ) -> int:
        """A new entry; returns its id."""
        entry = Waitlist(
            member_id=member_id,
            train_code=train_code,
            service_date=service_date,
            from_station=from_station,
            to_station=to_station,
            passengers=passengers,
            status=status,
            deadline=deadline,
            created_at=now,
            updated_at=now,
        )
        self.session.add(entry)
        await self.session.flush()
        return entry.id

    async def settle(
        self,
        entry_id: int,
        *,
        from_status: str,
        status: str,
        error_code: str | None,
        order_id: str | None,
        now: dt.datetime,
    ) -> None:
        """An entry's outcome, written only while it is still in ``from_status``."""
        await self.session.execute(
            update(Waitlist)
            .where(Waitlist.id == entry_id, Waitlist.status == from_status)
            .values(status=status, error_code=error_code, order_id=order_id, updated_at=now)
        )

    async def reopen_stale_claims(
        self, *, claimed: str, waiting: str, before: dt.datetime, now: dt.datetime
    ) -> None:
        """Claims taken before ``before`` (their process is gone) wait again."""
        await self.session.execute(
            update(Waitlist)
            .where(Waitlist.status == claimed, Waitlist.updated_at < before)
            .values(status=waiting, updated_at=now)
        )

    async def expire_departed(
        self, *, waiting: str, expired: str, today: dt.date, error_code: str, now: dt.datetime
    ) -> None:
        """Waiting entries for days gone by expire."""
        await self.session.execute(
            update(Waitlist)
            .where(Waitlist.status == waiting, Waitlist.service_date < today)
            .values(status=expired, error_code=error_code, updated_at=now)
        )

    async def expire_due(self, *, waiting: str, expired: str, error_code: str, now: dt.datetime) -> None:
        """Waiting entries whose deadline has come expire."""
        await self.session.execute(
            update(Waitlist)
            .where(Waitlist.status == waiting, Waitlist.deadline.is_not(None), Waitlist.deadline <= now)
            .values(status=expired, error_code=error_code, updated_at=now)
        )

    async def cancel_entry(
        self, member_id: int, entry_id: int, *, waiting: str, cancelled: str, now: dt.datetime
    ) -> WaitlistEntry | None:
        """Cancel the member's entry if it is waiting; the entry as it is then (None: not the member's).
        The conditional update loses to a process that claimed the entry to fill it."""
        await self.session.execute(
            update(Waitlist)
            .where(Waitlist.id == entry_id, Waitlist.member_id == member_id, Waitlist.status == waiting)
            .values(status=cancelled, updated_at=now)
        )
        row = (
            await self.session.execute(
                _with_boarding()
                .where(Waitlist.id == entry_id, Waitlist.member_id == member_id)
                .execution_options(populate_existing=True)
            )
        ).one_or_none()
        return None if row is None else _boarded_entry(row)


class SqlWaitlistStore:
    """Waitlist entries in the system of record."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[WaitlistTx]:
        """One waitlist transaction: commits when the block ends, rolls back on an exception."""
        async with self._sessionmaker() as session, session.begin():
            yield WaitlistTx(session)

    async def own_passengers(self, member_id: int, passenger_ids: Sequence[int]) -> set[int]:
        """Those of these passengers that belong to the member."""
        async with self._sessionmaker() as session:
            return set(
                (
                    await session.execute(
                        select(Passenger.id).where(
                            Passenger.member_id == member_id, Passenger.id.in_(passenger_ids)
                        )
                    )
                ).scalars()
            )

    async def entries_of_day(
        self, train_code: str, service_date: dt.date, *, status: str, limit: int
    ) -> list[WaitlistEntry]:
        """A train-day's entries in this status, oldest first."""
        async with self._sessionmaker() as session:
            rows = (
                (
                    await session.execute(
                        select(Waitlist)
                        .where(
                            Waitlist.status == status,
                            Waitlist.train_code == train_code,
                            Waitlist.service_date == service_date,
                        )
                        .order_by(Waitlist.id)
                        .limit(limit)
                    )
                )
                .scalars()
                .all()
            )
        return [_entry(w) for w in rows]

    async def claim(self, entry_id: int, *, waiting: str, claimed: str, now: dt.datetime) -> bool:
        """Move an entry from ``waiting`` to ``claimed``; only one process can win (a conditional
        update)."""
        async with self._sessionmaker() as session, session.begin():
            result = await session.execute(
                update(Waitlist)
                .where(Waitlist.id == entry_id, Waitlist.status == waiting)
                .values(status=claimed, updated_at=now)
            )
        return bool(getattr(result, "rowcount", 0))

    async def days_with(self, status: str) -> list[tuple[str, dt.date]]:
        """The train-days that have entries in this status."""
        async with self._sessionmaker() as session:
            rows = (
                await session.execute(
                    select(Waitlist.train_code, Waitlist.service_date)
                    .where(Waitlist.status == status)
                    .distinct()
                )
            ).all()
        return [(train_code, date) for train_code, date in rows]

    async def departs(self, daily_train_id: int, stop_index: int) -> StopTime | None:
        """When the train-day leaves this stop."""
        async with self._sessionmaker() as session:
            return await stop_time(session, daily_train_id, stop_index)

    async def entries_of_member(self, member_id: int, limit: int) -> list[WaitlistEntry]:
        """The member's entries, newest first."""
        async with self._sessionmaker() as session:
            rows = (
                await session.execute(
                    _with_boarding()
                    .where(Waitlist.member_id == member_id)
                    .order_by(Waitlist.id.desc())
                    .limit(limit)
                )
            ).all()
        return [_boarded_entry(row) for row in rows]
