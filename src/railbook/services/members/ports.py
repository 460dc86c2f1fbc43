"""What the member use cases need: the store of accounts and passengers, the order path's cache of
passenger names, and the anti-bot parts (captcha answers, failed-login counts, the blocklist)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from railbook.services.ports import KeptKey


@dataclass(frozen=True, slots=True)
class MemberRecord:
    """An account as stored (the password hash included)."""

    member_id: int
    mobile: str
    name: str
    role: str
    password_hash: str


@dataclass(frozen=True, slots=True)
class PassengerRecord:
    """A traveller on a member's list, as stored (the full ID number)."""

    passenger_id: int
    member_id: int
    name: str
    id_card: str
    type: str


@dataclass(frozen=True, slots=True)
class HeldJourney:
    """A journey a passenger holds an unpaid or paid ticket for: when the train reaches its end
    (the service date, and the arrival stop's clock time and day offset)."""

    service_date: dt.date
    arrives: str
    day: int


class PassengerListWrite(Protocol):
    """Statements on one member's passenger list, in one transaction."""

    async def lock_member(self, member_id: int) -> bool:
        """Lock the member's row until the transaction ends; False if the member is gone."""
        ...

    async def has_passenger(self, member_id: int, id_card: str) -> bool:
        """Whether the member already lists this ID number."""
        ...

    async def count_passengers(self, member_id: int) -> int:
        """How many passengers the member lists."""
        ...

    async def add_passenger(
        self, member_id: int, *, name: str, id_card: str, passenger_type: str
    ) -> PassengerRecord | None:
        """Insert a passenger; None when the member already lists that ID number."""
        ...


class MemberStore(Protocol):
    """Accounts and their passengers."""

    async def member_id(self, mobile: str) -> int | None:
        """The account holding this mobile number, if any."""
        ...

    async def member_by_mobile(self, mobile: str) -> MemberRecord | None:
        """The account holding this mobile number, if any."""
        ...

    async def credentials(self, mobile: str) -> tuple[int, str, str] | None:
        """(member id, role, password hash) of the account holding this mobile number, if any."""
        ...

    async def member(self, member_id: int) -> MemberRecord | None:
        """The account, if it still exists."""
        ...

    async def create_member(self, *, mobile: str, name: str, password_hash: str, role: str) -> int | None:
        """A new account's id; None when the mobile number is taken."""
        ...

    async def update_account(self, member_id: int, *, role: str | None, password_hash: str | None) -> None:
        """Set the role and/or the password hash of an account (nothing if it is gone)."""
        ...

    async def passengers(self, member_id: int) -> list[PassengerRecord]:
        """The member's passengers, oldest first."""
        ...

    async def passenger_riders(self, member_id: int) -> dict[int, str]:
        """The member's passengers by passenger id, as the order path caches them (``domain.riders``)."""
        ...

    async def kept_keys(self, member_id: int, since: dt.datetime) -> list[KeptKey]:
        """The member's orders' Idempotency-Keys the system of record keeps, of orders made since."""
        ...

    async def delete_passenger(self, member_id: int, passenger_id: int) -> bool:
        """Remove the member's passenger; False if there is none of that id for this member."""
        ...

    async def held_journeys(self, member_id: int, passenger_id: int) -> list[HeldJourney]:
        """The journeys of the passenger's unpaid or paid tickets booked by this member."""
        ...

    def passenger_list(self) -> AbstractAsyncContextManager[PassengerListWrite]:
        """One transaction on a passenger list: commits when the block ends, rolls back on an exception."""
        ...


class PassengerNameCache(Protocol):
    """The order path's shared cache of a member's passengers, as rider texts (kept by the order guard)."""

    async def passengers_generation(self, member_id: int) -> str: ...

    async def cache_passengers(
        self, member_id: int, generation: str, names: Mapping[int, str], keys: Sequence[KeptKey] = ()
    ) -> None: ...

    async def forget_passengers(self, member_id: int) -> None: ...

    async def pending_of_member(self, member_id: int) -> list[dict[str, Any]]: ...


class MemberViewCache(Protocol):
    """The read model's cache of member entries (``booking.ports.OrderViewCache`` provides it): the
    account view is cached beside the member's lists under the member's generation, so a fill that
    read the database before a change is refused (``booking.view_cache`` states the invariant)."""

    async def member_entry(self, member_id: int, name: str) -> tuple[str | None, int | None]: ...

    async def keep_member_entry(self, member_id: int, name: str, generation: int, value: str) -> None: ...

    async def forget(self, order_ids: Sequence[str], member_ids: Sequence[int]) -> None: ...


class CaptchaStore(Protocol):
    """Captcha answers by challenge id, each good for one check (Redis when distributed, memory
    when embedded)."""

    async def keep(self, captcha_id: str, answer: str, ttl_seconds: int) -> None:
        """Remember the answer of a new challenge for ``ttl_seconds``."""
        ...

    async def take(self, captcha_id: str) -> str | None:
        """The answer, removed in the same step (atomic: two checks of one challenge cannot both
        find it); None when unknown, expired or already used."""
        ...

    async def peek(self, captcha_id: str) -> str | None:
        """The answer without using it up (operators' tools and tests read it this way)."""
        ...


class LoginThrottle(Protocol):
    """Failed logins counted per mobile and per client address, each count living ``window_seconds``
    from its first failure."""

    async def failures(self, mobile: str, address: str) -> tuple[int, int]:
        """(failures of this mobile, failures from this address) in their current windows."""
        ...

    async def record_failure(self, mobile: str, address: str, window_seconds: int) -> None:
        """Count one failed login against the mobile and the address."""
        ...

    async def clear(self, mobile: str) -> None:
        """A successful login: the mobile's count starts again from zero."""
        ...


@dataclass(frozen=True, slots=True)
class BlockRecord:
    """A blocklist entry as stored: exactly one of ``mobile`` and ``ip`` (an address or a network)."""

    block_id: int
    mobile: str | None
    ip: str | None
    reason: str
    until: dt.datetime | None
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class ActiveBlock:
    """An entry that blocks now, with the account that holds a blocked mobile (if any), so the order
    path can tell a blocked member by id."""

    mobile: str | None
    ip: str | None
    until: dt.datetime | None
    member_id: int | None


class BlockStore(Protocol):
    """The blocklist in the system of record."""

    async def add_block(
        self, *, mobile: str | None, ip: str | None, reason: str, until: dt.datetime | None
    ) -> BlockRecord:
        """Insert an entry."""
        ...

    async def blocks(self) -> list[BlockRecord]:
        """Every entry, newest first (expired ones included)."""
        ...

    async def delete_block(self, block_id: int) -> bool:
        """Remove an entry; False when there is none of that id."""
        ...

    async def active_blocks(self, now: dt.datetime) -> list[ActiveBlock]:
        """The entries whose ``until`` is unset or after ``now``."""
        ...
