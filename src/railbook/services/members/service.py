"""Members: registration, login, passengers, the admin and demo accounts."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from railbook.config import Settings
from railbook.domain.errors import (
    BadCredentials,
    Conflict,
    MobileTaken,
    PassengerExists,
    PassengerHasTickets,
    PassengerLimit,
    PassengerNotFound,
    Unauthorized,
)
from railbook.domain.fees import departure_at
from railbook.domain.identity import (
    compose_id_card,
    mask_id_card,
    validate_id_card,
    validate_mobile,
    validate_passenger_type,
    validate_password,
    validate_person_name,
)
from railbook.kit.clock import beijing_today
from railbook.services.members.antibot import (
    AntiBotContext,
    CaptchaAnswer,
    guard_login,
    login_failed,
    login_succeeded,
)
from railbook.services.members.blocklist import BlocklistContext, refuse_blocked_login
from railbook.services.members.passwords import PasswordHasher
from railbook.services.members.ports import MemberStore, MemberViewCache, PassengerNameCache, PassengerRecord
from railbook.services.ports import keys_kept_since

log = structlog.get_logger(__name__)

DEMO_MOBILE = "13900000001"
DEMO_PASSWORD = "railbook-demo"
DEMO_NAME = "演示用户"
DEMO_PASSENGERS: tuple[tuple[str, str, dt.date, int, str], ...] = (
    ("张伟", "110101", dt.date(1988, 3, 7), 123, "adult"),
    ("李娜", "310104", dt.date(2003, 11, 21), 246, "student"),
)


class MemberContext(AntiBotContext, BlocklistContext, Protocol):
    """What these use cases need from the composition root (``bootstrap.Container``)."""

    settings: Settings
    password_hasher: PasswordHasher

    @property
    def members(self) -> MemberStore: ...

    @property
    def guard(self) -> PassengerNameCache: ...

    @property
    def order_views(self) -> MemberViewCache: ...


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


async def register(container: MemberContext, *, mobile: str, password: str, name: str) -> int:
    """Create a member account; 409 MOBILE_TAKEN when the mobile already has one."""
    mobile = validate_mobile(mobile)
    validate_password(password)
    name = validate_person_name(name)
    if await container.members.member_id(mobile) is not None:
        raise MobileTaken("This mobile number is already registered.")
    hashed = await container.password_hasher.hash(password)
    member_id = await container.members.create_member(
        mobile=mobile, name=name, password_hash=hashed, role="member"
    )
    if member_id is None:
        raise MobileTaken("This mobile number is already registered.")
    return member_id


async def authenticate(
    container: MemberContext,
    *,
    mobile: str,
    password: str,
    address: str = "",
    captcha: CaptchaAnswer | None = None,
) -> tuple[int, str]:
    """(member_id, role) for the right mobile and password; 401 BAD_CREDENTIALS otherwise, the same
    answer whether the mobile is unknown or the password wrong. Before the password is checked (and
    its hash paid for): 403 BLOCKED for a blocked mobile or client ``address``, and 403
    CAPTCHA_REQUIRED after too many failures until a captcha is solved (``antibot.guard_login``)."""
    await refuse_blocked_login(container, mobile=mobile, address=address)
    await guard_login(container, mobile=mobile, address=address, captcha=captcha)
    row = await container.members.credentials(mobile)
    ok, updated = await container.password_hasher.verify(password, row[2] if row else None)
    if row is None or not ok:
        await login_failed(container, mobile=mobile, address=address)
        raise BadCredentials("Wrong mobile number or password.")
    await login_succeeded(container, mobile=mobile)
    member_id, role, _hash = row
    if updated is not None:
        await _update_account(container, member_id, role=None, password_hash=updated)
    if role == "member":
        await _warm_cached_passengers(container, member_id)
    return member_id, role


ACCOUNT_ENTRY = "account"


async def get_member(container: MemberContext, member_id: int) -> MemberView:
    """The member behind a token; 401 if the account is gone. Served from the member's cached entry,
    which every change of the account drops (``_update_account``)."""
    views = container.order_views
    cached, generation = await views.member_entry(member_id, ACCOUNT_ENTRY)
    if cached is not None:
        mid, mobile, name, role = json.loads(cached)
        return MemberView(int(mid), str(mobile), str(name), str(role))
    member = await container.members.member(member_id)
    if member is None:
        raise Unauthorized("This account no longer exists.")
    view = MemberView(member.member_id, member.mobile, member.name, member.role)
    if generation is not None:
        entry = json.dumps([view.member_id, view.mobile, view.name, view.role], ensure_ascii=False)
        await views.keep_member_entry(member_id, ACCOUNT_ENTRY, generation, entry)
    return view


async def _update_account(
    container: MemberContext, member_id: int, *, role: str | None, password_hash: str | None
) -> None:
    """Change the account, then drop its cached view (after the commit, before answering)."""
    await container.members.update_account(member_id, role=role, password_hash=password_hash)
    await container.order_views.forget([], [member_id])


def _passenger_view(p: PassengerRecord) -> PassengerView:
    return PassengerView(p.passenger_id, p.name, mask_id_card(p.id_card), p.type)


async def add_passenger(
    container: MemberContext, member_id: int, *, name: str, id_card: str, passenger_type: str
) -> PassengerView:
    """Add a traveller to the member's list; 409 PASSENGER_LIMIT / PASSENGER_EXISTS."""
    name = validate_person_name(name)
    id_card = validate_id_card(id_card, today=beijing_today())
    passenger_type = validate_passenger_type(passenger_type)
    limit = container.settings.max_passengers_per_member
    async with container.members.passenger_list() as tx:
        # The member's row stays locked until the end of the block, so the limit and the duplicate
        # check cannot both pass for two racing adds of one member (see ``lock_member``).
        if not await tx.lock_member(member_id):
            raise Unauthorized("This account no longer exists.")
        if await tx.has_passenger(member_id, id_card):
            raise PassengerExists("This passenger is already on your list.")
        if await tx.count_passengers(member_id) >= limit:
            raise PassengerLimit(
                f"A member can keep at most {limit} passengers.",
                details={"limit": limit},
            )
        passenger = await tx.add_passenger(
            member_id, name=name, id_card=id_card, passenger_type=passenger_type
        )
        if passenger is None:
            raise PassengerExists("This passenger is already on your list.")
    await _warm_cached_passengers(container, member_id)  # the passenger is added to be booked
    return _passenger_view(passenger)


async def list_passengers(container: MemberContext, member_id: int) -> list[PassengerView]:
    """The member's passengers, oldest first."""
    return [_passenger_view(p) for p in await container.members.passengers(member_id)]


async def delete_passenger(
    container: MemberContext, member_id: int, passenger_id: int, *, now: dt.datetime | None = None
) -> None:
    """Remove one of the member's passengers; someone else's (or none) is 404, as if it did not exist;
    PASSENGER_HAS_TICKETS while they hold an unpaid or paid ticket for a journey not yet made, or are
    in an order still in the queue."""
    # The order path's cache of the member's passengers is dropped before (a fill racing with this
    # delete is then refused) and again after the commit (a fill that read the row just before it).
    await _forget_cached_passengers(container, member_id)
    await _refuse_if_travelling(container, member_id, passenger_id, now or dt.datetime.now(dt.UTC))
    if not await container.members.delete_passenger(member_id, passenger_id):
        raise PassengerNotFound("No such passenger.")
    try:
        await _forget_cached_passengers(container, member_id)
    except Exception as exc:
        log.warning("passenger_cache_not_cleared", member_id=member_id, error=repr(exc)[:200])


async def _refuse_if_travelling(
    container: MemberContext, member_id: int, passenger_id: int, now: dt.datetime
) -> None:
    """PASSENGER_HAS_TICKETS while the passenger holds a ticket whose train has not yet reached its
    end, or is in an order accepted but not yet written."""
    journeys = await container.members.held_journeys(member_id, passenger_id)
    ahead = [j for j in journeys if departure_at(j.service_date, j.arrives, j.day) > now]
    queued = [
        r
        for r in await container.guard.pending_of_member(member_id)
        if any(int(p.get("passenger_id", 0)) == passenger_id for p in r.get("passengers", []))
    ]
    if ahead or queued:
        raise PassengerHasTickets(
            "This passenger holds tickets for journeys not yet made; refund or finish them first.",
            details={"passenger_id": passenger_id, "journeys": len(ahead) + len(queued)},
        )


async def _warm_cached_passengers(container: MemberContext, member_id: int) -> None:
    """Fill the order path's cache of the member's passengers (a member who logs in or adds a
    passenger is about to order), and of the Idempotency-Keys of their orders (``KeptKey``), so the
    order needs no database read. Best effort: a miss reads later."""
    guard = container.guard
    try:
        generation = await guard.passengers_generation(member_id)
        found = await container.members.passenger_riders(member_id)
        if found:
            since = keys_kept_since(dt.datetime.now(dt.UTC))
            keys = await container.members.kept_keys(member_id, since)
            await guard.cache_passengers(member_id, generation, found, keys)
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
        member = await container.members.member_by_mobile(mobile)
        if member is not None:
            ok, _updated = await hasher.verify(password, member.password_hash)
            new_hash = None if ok else await hasher.hash(password)
            if member.role != role or new_hash is not None:
                await _update_account(container, member.member_id, role=role, password_hash=new_hash)
            return member.member_id
        hashed = await hasher.hash(password)
        created = await container.members.create_member(
            mobile=mobile, name=name, password_hash=hashed, role=role
        )
        if created is not None:
            return created
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
