"""Members: registration, login, passengers, the admin and demo accounts."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from railbook.adapters.db.models import Member, Passenger
from railbook.config import Settings
from railbook.domain.errors import (
    BadCredentials,
    Conflict,
    LoginBusy,
    MobileTaken,
    PassengerExists,
    PassengerLimit,
    PassengerNotFound,
    Unauthorized,
)
from railbook.domain.identity import (
    compose_id_card,
    mask_id_card,
    validate_id_card,
    validate_mobile,
    validate_passenger_type,
    validate_password,
    validate_person_name,
)

log = structlog.get_logger(__name__)

DEMO_MOBILE = "13900000001"
DEMO_PASSWORD = "railbook-demo"
DEMO_NAME = "演示用户"
DEMO_PASSENGERS: tuple[tuple[str, str, dt.date, int, str], ...] = (
    ("张伟", "110101", dt.date(1988, 3, 7), 123, "adult"),
    ("李娜", "310104", dt.date(2003, 11, 21), 246, "student"),
)


class PassengerNameCache(Protocol):
    """The order path's shared cache of a member's passenger names (kept by the order guard)."""

    async def passengers_generation(self, member_id: int) -> str: ...

    async def cache_passengers(self, member_id: int, generation: str, names: Mapping[int, str]) -> None: ...

    async def forget_passengers(self, member_id: int) -> None: ...


class MemberContext(Protocol):
    """What these use cases need from the composition root (``bootstrap.Container``)."""

    settings: Settings
    sessionmaker: async_sessionmaker[AsyncSession]
    password_hasher: PasswordHasher

    @property
    def guard(self) -> PassengerNameCache: ...


@dataclass(frozen=True, slots=True)
class MemberView:
    member_id: int
    mobile: str
    name: str
    role: str


@dataclass(frozen=True, slots=True)
class PassengerView:
    passenger_id: int
    name: str
    id_card_masked: str
    type: str


class PasswordHasher:
    """Argon2 off the event loop, with a bounded number of hashes at a time.

    Invariant: at most ``concurrency`` hashes run at once (each in a worker thread) and at most
    ``queue_limit`` more wait; beyond that a login is refused with 503 at once. So a login storm
    costs a fixed share of the CPU and never holds the event loop, and bookings keep flowing.
    """

    def __init__(self, settings: Settings, *, concurrency: int | None = None, queue_limit: int | None = None):
        self._hash = PasswordHash(
            (
                Argon2Hasher(
                    time_cost=settings.argon2_time_cost,
                    memory_cost=settings.argon2_memory_cost,
                    parallelism=1,
                ),
            )
        )
        self.concurrency = concurrency or max(1, (os.cpu_count() or 2) // 2)
        self.queue_limit = queue_limit if queue_limit is not None else self.concurrency * 16
        self._slots = asyncio.Semaphore(self.concurrency)
        self._waiting = 0
        self._dummy: str | None = None

    async def _run(self, fn: Any, *args: Any) -> Any:
        if self._waiting >= self.queue_limit + self.concurrency:
            raise LoginBusy("Too many logins at once; retry shortly.", retry_after=1)
        self._waiting += 1
        try:
            async with self._slots:
                return await asyncio.to_thread(fn, *args)
        finally:
            self._waiting -= 1

    async def hash(self, password: str) -> str:
        result: str = await self._run(self._hash.hash, password)
        return result

    async def verify(self, password: str, hashed: str | None) -> tuple[bool, str | None]:
        """(matches, new hash if the parameters changed). With no stored hash, a dummy one is
        checked so unknown mobiles take as long as wrong passwords."""
        if hashed is None:
            if self._dummy is None:
                self._dummy = await self.hash("railbook-no-such-member")
            await self._run(self._hash.verify_and_update, password, self._dummy)
            return False, None
        ok, updated = await self._run(self._hash.verify_and_update, password, hashed)
        return bool(ok), updated


async def register(container: MemberContext, *, mobile: str, password: str, name: str) -> int:
    """Create a member account; 409 MOBILE_TAKEN when the mobile already has one."""
    mobile = validate_mobile(mobile)
    validate_password(password)
    name = validate_person_name(name)
    async with container.sessionmaker() as session:
        taken = await session.scalar(select(Member.id).where(Member.mobile == mobile))
    if taken is not None:
        raise MobileTaken("This mobile number is already registered.")
    hashed = await container.password_hasher.hash(password)
    try:
        async with container.sessionmaker() as session, session.begin():
            member = Member(mobile=mobile, name=name, password_hash=hashed, role="member")
            session.add(member)
            await session.flush()
            return member.id
    except IntegrityError:
        raise MobileTaken("This mobile number is already registered.") from None


async def authenticate(container: MemberContext, *, mobile: str, password: str) -> tuple[int, str]:
    """(member_id, role) for the right mobile and password; 401 BAD_CREDENTIALS otherwise, the same
    answer whether the mobile is unknown or the password wrong."""
    async with container.sessionmaker() as session:
        row = (
            await session.execute(
                select(Member.id, Member.role, Member.password_hash).where(Member.mobile == mobile)
            )
        ).first()
    ok, updated = await container.password_hasher.verify(password, row.password_hash if row else None)
    if row is None or not ok:
        raise BadCredentials("Wrong mobile number or password.")
    if updated is not None:
        async with container.sessionmaker() as session, session.begin():
            member = await session.get(Member, row.id)
            if member is not None:
                member.password_hash = updated
    if row.role == "member":
        await _warm_cached_passengers(container, row.id)
    return row.id, row.role


async def get_member(container: MemberContext, member_id: int) -> MemberView:
    """The member behind a token; 401 if the account is gone."""
    async with container.sessionmaker() as session:
        member = await session.get(Member, member_id)
    if member is None:
        raise Unauthorized("This account no longer exists.")
    return MemberView(member.id, member.mobile, member.name, member.role)


def _passenger_view(p: Passenger) -> PassengerView:
    return PassengerView(p.id, p.name, mask_id_card(p.id_card), p.type)


async def add_passenger(
    container: MemberContext, member_id: int, *, name: str, id_card: str, passenger_type: str
) -> PassengerView:
    """Add a traveller to the member's list; 409 PASSENGER_LIMIT / PASSENGER_EXISTS."""
    name = validate_person_name(name)
    id_card = validate_id_card(id_card)
    passenger_type = validate_passenger_type(passenger_type)
    limit = container.settings.max_passengers_per_member
    try:
        async with container.sessionmaker() as session, session.begin():
            # Locking the member row serialises concurrent adds of one member (PostgreSQL; SQLite
            # serialises every write transaction with BEGIN IMMEDIATE), so the limit and the
            # duplicate check cannot both pass for two racing requests.
            member = await session.scalar(select(Member).where(Member.id == member_id).with_for_update())
            if member is None:
                raise Unauthorized("This account no longer exists.")
            existing = await session.scalar(
                select(Passenger.id).where(Passenger.member_id == member_id, Passenger.id_card == id_card)
            )
            if existing is not None:
                raise PassengerExists("This passenger is already on your list.")
            count = await session.scalar(
                select(func.count()).select_from(Passenger).where(Passenger.member_id == member_id)
            )
            if (count or 0) >= limit:
                raise PassengerLimit(
                    f"A member can keep at most {limit} passengers.",
                    details={"limit": limit},
                )
            passenger = Passenger(member_id=member_id, name=name, id_card=id_card, type=passenger_type)
            session.add(passenger)
            await session.flush()
            return _passenger_view(passenger)
    except IntegrityError:
        raise PassengerExists("This passenger is already on your list.") from None


async def list_passengers(container: MemberContext, member_id: int) -> list[PassengerView]:
    """The member's passengers, oldest first."""
    async with container.sessionmaker() as session:
        rows = (
            await session.scalars(
                select(Passenger).where(Passenger.member_id == member_id).order_by(Passenger.id)
            )
        ).all()
    return [_passenger_view(p) for p in rows]


async def delete_passenger(container: MemberContext, member_id: int, passenger_id: int) -> None:
    """Remove one of the member's passengers; someone else's (or none) is 404, as if it did not exist."""
    # The order path's cache of the member's passengers is dropped before (a fill racing with this
    # delete is then refused) and again after the commit (a fill that read the row just before it).
    await _forget_cached_passengers(container, member_id)
    async with container.sessionmaker() as session, session.begin():
        passenger = await session.get(Passenger, passenger_id)
        if passenger is None or passenger.member_id != member_id:
            raise PassengerNotFound("No such passenger.")
        await session.delete(passenger)
    try:
        await _forget_cached_passengers(container, member_id)
    except Exception as exc:
        log.warning("passenger_cache_not_cleared", member_id=member_id, error=repr(exc)[:200])


async def _warm_cached_passengers(
    container: MemberContext, member_id: int, rows: list[Passenger] | None = None
) -> None:
    """Fill the order path's cache of the member's passengers (a member who logs in
    is about to order), so the order needs no database read. Best effort: a miss reads later."""
    guard = container.guard
    try:
        generation = await guard.passengers_generation(member_id)
        if rows is None:
            async with container.sessionmaker() as session:
                found = dict(
                    (
                        await session.execute(
                            select(Passenger.id, Passenger.name).where(Passenger.member_id == member_id)
                        )
                    )
                    .tuples()
                    .all()
                )
        else:
            found = {p.id: p.name for p in rows}
        if found:
            await guard.cache_passengers(member_id, generation, found)
    except Exception as exc:
        log.warning("passenger_cache_not_filled", member_id=member_id, error=repr(exc)[:200])


async def _forget_cached_passengers(container: MemberContext, member_id: int) -> None:
    """The member's passenger list changed: the order path's shared cache of it must not answer."""
    await container.guard.forget_passengers(member_id)


async def _ensure_account(
    container: MemberContext, *, mobile: str, password: str, name: str, role: str
) -> int:
    """Create the account, or give an existing one this role and password. Safe when several
    processes start at once: the loser of the insert race updates the winner's row."""
    hasher = container.password_hasher
    for _ in range(2):
        async with container.sessionmaker() as session:
            member = await session.scalar(select(Member).where(Member.mobile == mobile))
        if member is not None:
            ok, _updated = await hasher.verify(password, member.password_hash)
            new_hash = None if ok else await hasher.hash(password)
            if member.role != role or new_hash is not None:
                async with container.sessionmaker() as session, session.begin():
                    row = await session.get(Member, member.id)
                    if row is not None:
                        row.role = role
                        if new_hash is not None:
                            row.password_hash = new_hash
            return member.id
        hashed = await hasher.hash(password)
        try:
            async with container.sessionmaker() as session, session.begin():
                created = Member(mobile=mobile, name=name, password_hash=hashed, role=role)
                session.add(created)
                await session.flush()
                return created.id
        except IntegrityError:
            continue
    raise MobileTaken("The account could not be created.")


async def ensure_admin_hook(container: Any) -> None:
    """Make sure the configured admin account exists (RAILBOOK_ADMIN_MOBILE / _PASSWORD) with role admin."""
    settings: Settings = container.settings
    if not settings.admin_mobile or not settings.admin_password:
        return
    await _ensure_account(
        container, mobile=settings.admin_mobile, password=settings.admin_password, name="管理员", role="admin"
    )
    log.info("admin_account_ready", mobile=settings.admin_mobile)


async def ensure_demo_member(container: Any) -> tuple[str, str]:
    """A demo passenger account with two travellers, so the pages can be tried at once."""
    member_id = await _ensure_account(
        container, mobile=DEMO_MOBILE, password=DEMO_PASSWORD, name=DEMO_NAME, role="member"
    )
    for name, region, birth, sequence, kind in DEMO_PASSENGERS:
        try:
            id_card = compose_id_card(region, birth, sequence)
            await add_passenger(container, member_id, name=name, id_card=id_card, passenger_type=kind)
        except Conflict:
            pass  # already there (or the list is full): the demo account is usable either way
    return DEMO_MOBILE, DEMO_PASSWORD
