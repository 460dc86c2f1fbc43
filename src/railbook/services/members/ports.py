"""What the member use cases need: the store of accounts and passengers, and the order path's cache
of passenger names."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol


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

    async def delete_passenger(self, member_id: int, passenger_id: int) -> bool:
        """Remove the member's passenger; False if there is none of that id for this member."""
        ...

    def passenger_list(self) -> AbstractAsyncContextManager[PassengerListWrite]:
        """One transaction on a passenger list: commits when the block ends, rolls back on an exception."""
        ...


class PassengerNameCache(Protocol):
    """The order path's shared cache of a member's passengers, as rider texts (kept by the order guard)."""

    async def passengers_generation(self, member_id: int) -> str: ...

    async def cache_passengers(self, member_id: int, generation: str, names: Mapping[int, str]) -> None: ...

    async def forget_passengers(self, member_id: int) -> None: ...


class MemberViewCache(Protocol):
    """The read model's cache of member entries (``booking.ports.OrderViewCache`` provides it): the
    account view is cached beside the member's lists under the member's generation, so a fill that
    read the database before a change is refused (``booking.view_cache`` states the invariant)."""

    async def member_entry(self, member_id: int, name: str) -> tuple[str | None, int | None]: ...

    async def keep_member_entry(self, member_id: int, name: str, generation: int, value: str) -> None: ...

    async def forget(self, order_ids: Sequence[str], member_ids: Sequence[int]) -> None: ...
