"""Member accounts and their passengers on PostgreSQL or SQLite."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import bindparam, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from railbook.adapters.db.accept_reads import kept_keys
from railbook.adapters.db.models import DailyTrainStop, Member, Order, Passenger, Ticket
from railbook.domain.order_state import TicketStatus
from railbook.domain.riders import Rider
from railbook.services.members.ports import HeldJourney, MemberRecord, PassengerRecord
from railbook.services.ports import KeptKey

HELD = [TicketStatus.UNPAID.value, TicketStatus.PAID.value]


def _member(row: Member) -> MemberRecord:
    return MemberRecord(row.id, row.mobile, row.name, row.role, row.password_hash)


def _passenger(row: Passenger) -> PassengerRecord:
    return PassengerRecord(row.id, row.member_id, row.name, row.id_card, row.type)


class SqlPassengerList:
    """Statements on one member's passenger list, in the caller's transaction."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def lock_member(self, member_id: int) -> bool:
        """Lock the member's row until the transaction ends; False if the member is gone.

        Locking the member row serialises concurrent adds of one member (PostgreSQL; SQLite
        serialises every write transaction with BEGIN IMMEDIATE), so the limit and the duplicate
        check cannot both pass for two racing requests.
        """
        member = await self._session.scalar(select(Member).where(Member.id == member_id).with_for_update())
        return member is not None

    async def has_passenger(self, member_id: int, id_card: str) -> bool:
        """Whether the member already lists this ID number."""
        existing = await self._session.scalar(
            select(Passenger.id).where(Passenger.member_id == member_id, Passenger.id_card == id_card)
        )
        return existing is not None

    async def count_passengers(self, member_id: int) -> int:
        """How many passengers the member lists."""
        count = await self._session.scalar(
            select(func.count()).select_from(Passenger).where(Passenger.member_id == member_id)
        )
        return count or 0

    async def add_passenger(
        self, member_id: int, *, name: str, id_card: str, passenger_type: str
    ) -> PassengerRecord | None:
        """Insert a passenger; None when the member already lists that ID number (a racing insert)."""
        passenger = Passenger(member_id=member_id, name=name, id_card=id_card, type=passenger_type)
        self._session.add(passenger)
        try:
            await self._session.flush()
        except IntegrityError:
            return None
        return _passenger(passenger)


# Built once: login runs them in a storm before a sale.
_CREDENTIALS = select(Member.id, Member.role, Member.password_hash).where(
    Member.mobile == bindparam("mobile")
)
_RIDERS = select(Passenger.id, Passenger.name, Passenger.type, Passenger.id_card).where(
    Passenger.member_id == bindparam("member_id")
)


class SqlMembers:
    """The member store."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        reads: AsyncEngine | None = None,
        *,
        traveller_secret: str,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._traveller_secret = traveller_secret  # the riders' traveller keys are made under it
        # Login's reads (a storm of them before a sale): single Core statements on a connection of
        # ``reads`` (no transaction on PostgreSQL, see the container), no session or ORM state.
        self._reads: AsyncEngine = reads or sessionmaker.kw["bind"]

    async def member_id(self, mobile: str) -> int | None:
        """The account holding this mobile number, if any."""
        async with self._sessionmaker() as session:
            member_id: int | None = await session.scalar(select(Member.id).where(Member.mobile == mobile))
        return member_id

    async def member_by_mobile(self, mobile: str) -> MemberRecord | None:
        """The account holding this mobile number, if any."""
        async with self._sessionmaker() as session:
            member = await session.scalar(select(Member).where(Member.mobile == mobile))
        return _member(member) if member is not None else None

    async def credentials(self, mobile: str) -> tuple[int, str, str] | None:
        """(member id, role, password hash) of the account holding this mobile number, if any."""
        async with self._reads.connect() as conn:
            row = (await conn.execute(_CREDENTIALS, {"mobile": mobile})).first()
        return (int(row[0]), str(row[1]), str(row[2])) if row is not None else None

    async def member(self, member_id: int) -> MemberRecord | None:
        """The account, if it still exists."""
        async with self._sessionmaker() as session:
            member = await session.get(Member, member_id)
        return _member(member) if member is not None else None

    async def create_member(self, *, mobile: str, name: str, password_hash: str, role: str) -> int | None:
        """A new account's id; None when the mobile number is taken (a racing insert won)."""
        try:
            async with self._sessionmaker() as session, session.begin():
                member = Member(mobile=mobile, name=name, password_hash=password_hash, role=role)
                session.add(member)
                await session.flush()
                return member.id
        except IntegrityError:
            return None

    async def update_account(self, member_id: int, *, role: str | None, password_hash: str | None) -> None:
        """Set the role and/or the password hash of an account (nothing if it is gone)."""
        async with self._sessionmaker() as session, session.begin():
            member = await session.get(Member, member_id)
            if member is None:
                return
            if role is not None:
                member.role = role
            if password_hash is not None:
                member.password_hash = password_hash

    async def passengers(self, member_id: int) -> list[PassengerRecord]:
        """The member's passengers, oldest first."""
        async with self._sessionmaker() as session:
            rows = (
                await session.scalars(
                    select(Passenger).where(Passenger.member_id == member_id).order_by(Passenger.id)
                )
            ).all()
        return [_passenger(p) for p in rows]

    async def passenger_riders(self, member_id: int) -> dict[int, str]:
        """The member's passengers by passenger id, as rider texts (``domain.riders``)."""
        async with self._reads.connect() as conn:
            rows = (await conn.execute(_RIDERS, {"member_id": member_id})).all()
        secret = self._traveller_secret
        return {int(pid): Rider.of(name, kind, card, secret).text() for pid, name, kind, card in rows}

    async def kept_keys(self, member_id: int, since: dt.datetime) -> list[KeptKey]:
        return await kept_keys(self._reads, member_id, since)

    async def delete_passenger(self, member_id: int, passenger_id: int) -> bool:
        """Remove the member's passenger; False if there is none of that id for this member."""
        async with self._sessionmaker() as session, session.begin():
            passenger = await session.get(Passenger, passenger_id)
            if passenger is None or passenger.member_id != member_id:
                return False
            await session.delete(passenger)
        return True

    async def held_journeys(self, member_id: int, passenger_id: int) -> list[HeldJourney]:
        """The journeys of the passenger's unpaid or paid tickets booked by this member."""
        async with self._sessionmaker() as session:
            rows = (
                await session.execute(
                    select(Order.service_date, DailyTrainStop.arrives, DailyTrainStop.day)
                    .select_from(Ticket)
                    .join(Order, Order.id == Ticket.order_id)
                    .join(
                        DailyTrainStop,
                        (DailyTrainStop.daily_train_id == Ticket.daily_train_id)
                        & (DailyTrainStop.stop_index == Ticket.to_index),
                    )
                    .where(
                        Ticket.member_id == member_id,
                        Ticket.passenger_id == passenger_id,
                        Ticket.status.in_(HELD),
                    )
                )
            ).all()
        return [HeldJourney(date, arrives or "23:59", int(day or 0)) for date, arrives, day in rows]

    @asynccontextmanager
    async def passenger_list(self) -> AsyncIterator[SqlPassengerList]:
        """One transaction: commits when the block ends normally, rolls back on an exception."""
        async with self._sessionmaker() as session, session.begin():
            yield SqlPassengerList(session)
