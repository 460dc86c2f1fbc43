"""The blocklist (API.md "Admin", "Anti-bot"): mobiles and client addresses refused at login and on
orders, kept in the system of record and checked from a copy in process memory.

The order path must not ask the database per order, so each process holds the active entries as
sets (``BlockSet``) and reloads them in the background at most every ``REFRESH_SECONDS``; a change
made through this process reloads them at once, other processes see it within a refresh. An entry's
``until`` is checked against the clock at every look-up, so an entry stops blocking the moment it
expires, whatever the age of the copy. A blocked mobile blocks its account's orders too: a reload
resolves each blocked mobile to its member id, which is what the order path knows.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import structlog

from railbook.domain.antibot import IpNetwork, block_reason, block_target, client_address
from railbook.domain.errors import Blocked, BlockNotFound
from railbook.kit.clock import as_utc, utcnow
from railbook.services.members.ports import ActiveBlock, BlockRecord, BlockStore

log = structlog.get_logger(__name__)

REFRESH_SECONDS = 1.0
FOREVER = math.inf

K = TypeVar("K")


def _extend(table: dict[K, float], key: K, end: float) -> None:
    """Several entries for one target: the latest end wins."""
    table[key] = max(end, table.get(key, 0.0))


@dataclass(frozen=True, slots=True)
class BlockSet:
    """The active entries at one reload: per blocked mobile, member id, address and network, the
    end of its block as a Unix time (``FOREVER`` when it has none)."""

    mobiles: Mapping[str, float] = field(default_factory=dict)
    members: Mapping[int, float] = field(default_factory=dict)
    addresses: Mapping[str, float] = field(default_factory=dict)
    networks: tuple[tuple[IpNetwork, float], ...] = ()

    @classmethod
    def of(cls, entries: Iterable[ActiveBlock]) -> BlockSet:
        mobiles: dict[str, float] = {}
        members: dict[int, float] = {}
        addresses: dict[str, float] = {}
        networks: list[tuple[IpNetwork, float]] = []
        for entry in entries:
            end = as_utc(entry.until).timestamp() if entry.until is not None else FOREVER
            if entry.mobile is not None:
                _extend(mobiles, entry.mobile, end)
                if entry.member_id is not None:
                    _extend(members, entry.member_id, end)
            elif entry.ip is not None:
                network = ipaddress.ip_network(entry.ip, strict=False)
                if network.num_addresses == 1:
                    _extend(addresses, str(network.network_address), end)
                else:
                    networks.append((network, end))
        return cls(mobiles, members, addresses, tuple(networks))

    def blocks_address(self, address: str, now: float) -> float | None:
        """The end of the block of this client address (or of a network holding it), if blocked now."""
        end = self.addresses.get(address)
        if end is not None and end > now:
            return end
        if not self.networks and not self.addresses:
            return None
        parsed = client_address(address)
        if parsed is None:
            return None
        end = self.addresses.get(str(parsed))
        if end is not None and end > now:
            return end
        for network, until in self.networks:
            if until > now and parsed.version == network.version and parsed in network:
                return until
        return None

    def blocks_mobile(self, mobile: str, now: float) -> float | None:
        end = self.mobiles.get(mobile)
        return end if end is not None and end > now else None

    def blocks_member(self, member_id: int, now: float) -> float | None:
        end = self.members.get(member_id)
        return end if end is not None and end > now else None


class Blocklist:
    """This process's copy of the active blocklist (see the module's docstring)."""

    def __init__(self, store: BlockStore, *, refresh_seconds: float = REFRESH_SECONDS) -> None:
        self.store = store
        self.refresh_seconds = refresh_seconds
        self._current: BlockSet | None = None
        self._due = 0.0
        self._first = asyncio.Lock()
        self._refreshing: asyncio.Task[None] | None = None

    async def current(self) -> BlockSet:
        """The copy, loaded on first use and refreshed in the background once it is due (a look-up
        never waits for the database after the first load)."""
        blocks = self._current
        if blocks is None:
            async with self._first:
                if self._current is None:
                    await self.reload()
            assert self._current is not None
            return self._current
        if time.monotonic() >= self._due and self._refreshing is None:
            self._refreshing = asyncio.create_task(self._refresh())
        return blocks

    async def reload(self) -> None:
        """Read the active entries now (after a change, and for the first use)."""
        entries = await self.store.active_blocks(utcnow())
        self._current = BlockSet.of(entries)
        self._due = time.monotonic() + self.refresh_seconds

    async def _refresh(self) -> None:
        try:
            await self.reload()
        except Exception as exc:
            # Keep the copy there is; the next look-up after another period tries again.
            self._due = time.monotonic() + self.refresh_seconds
            log.warning("blocklist_not_refreshed", error=repr(exc)[:200])
        finally:
            self._refreshing = None

    async def close(self) -> None:
        task, self._refreshing = self._refreshing, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


class BlocklistContext(Protocol):
    """What these use cases need from the composition root (``bootstrap.Container``)."""

    blocklist: Blocklist


@dataclass(frozen=True, slots=True)
class BlockView:
    block_id: int
    mobile: str | None
    ip: str | None
    reason: str
    until: dt.datetime | None
    created_at: dt.datetime
    active: bool


def _view(record: BlockRecord, now: dt.datetime) -> BlockView:
    until = as_utc(record.until) if record.until is not None else None
    return BlockView(
        record.block_id,
        record.mobile,
        record.ip,
        record.reason,
        until,
        as_utc(record.created_at),
        until is None or until > now,
    )


def _instant(moment: dt.datetime) -> dt.datetime:
    """An instant in UTC; a time given without a zone is taken as UTC."""
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


async def add_block(
    container: BlocklistContext,
    *,
    mobile: str | None,
    ip: str | None,
    reason: str,
    until: dt.datetime | None,
) -> BlockView:
    """Block a mobile or a client address (or network), until ``until`` or for good. An ``until``
    already past is kept but blocks nothing."""
    mobile, ip = block_target(mobile, ip)
    record = await container.blocklist.store.add_block(
        mobile=mobile, ip=ip, reason=block_reason(reason), until=_instant(until) if until else None
    )
    await container.blocklist.reload()
    return _view(record, utcnow())


async def list_blocks(container: BlocklistContext) -> list[BlockView]:
    """Every entry, newest first, with whether it blocks now."""
    now = utcnow()
    return [_view(r, now) for r in await container.blocklist.store.blocks()]


async def remove_block(container: BlocklistContext, block_id: int) -> None:
    """Lift a block; 404 BLOCK_NOT_FOUND for an id that is not on the list."""
    if not await container.blocklist.store.delete_block(block_id):
        raise BlockNotFound("No such blocklist entry.")
    await container.blocklist.reload()


def _blocked(end: float) -> Blocked:
    until = None if end == FOREVER else dt.datetime.fromtimestamp(end, dt.UTC).isoformat()
    return Blocked("Access from this account or address is blocked.", details={"until": until})


async def refuse_blocked_login(container: BlocklistContext, *, mobile: str, address: str) -> None:
    """403 BLOCKED for a login of a blocked mobile or from a blocked address."""
    blocks = await container.blocklist.current()
    now = time.time()
    end = blocks.blocks_mobile(mobile, now) or (blocks.blocks_address(address, now) if address else None)
    if end is not None:
        raise _blocked(end)


async def refuse_blocked_order(container: BlocklistContext, *, member_id: int, address: str) -> None:
    """403 BLOCKED for an order of a member whose mobile is blocked, or from a blocked address. Dict
    look-ups in this process's copy: no store is asked."""
    blocks = await container.blocklist.current()
    if not blocks.members and not blocks.addresses and not blocks.networks:
        return
    now = time.time()
    end = blocks.blocks_member(member_id, now) or (blocks.blocks_address(address, now) if address else None)
    if end is not None:
        raise _blocked(end)


async def load_blocklist_hook(container: BlocklistContext) -> None:
    """Start-up: read the blocklist before the first request needs it."""
    await container.blocklist.reload()
