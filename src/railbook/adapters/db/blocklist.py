"""The blocklist on PostgreSQL or SQLite."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from railbook.adapters.db.models import BlocklistEntry, Member
from railbook.kit.clock import as_utc
from railbook.services.members.ports import ActiveBlock, BlockRecord


def _record(row: BlocklistEntry) -> BlockRecord:
    until = as_utc(row.until) if row.until is not None else None
    return BlockRecord(row.id, row.mobile, row.ip, row.reason, until, as_utc(row.created_at))


class SqlBlocklist:
    """The BlockStore: entries in ``blocklist_entry``."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker

    async def add_block(
        self, *, mobile: str | None, ip: str | None, reason: str, until: dt.datetime | None
    ) -> BlockRecord:
        async with self._sessionmaker() as session, session.begin():
            row = BlocklistEntry(mobile=mobile, ip=ip, reason=reason, until=until)
            session.add(row)
            await session.flush()
            return _record(row)

    async def blocks(self) -> list[BlockRecord]:
        async with self._sessionmaker() as session:
            rows = await session.scalars(select(BlocklistEntry).order_by(BlocklistEntry.id.desc()))
            return [_record(r) for r in rows]

    async def delete_block(self, block_id: int) -> bool:
        async with self._sessionmaker() as session, session.begin():
            result = await session.execute(
                delete(BlocklistEntry).where(BlocklistEntry.id == block_id).returning(BlocklistEntry.id)
            )
            return result.first() is not None

    async def active_blocks(self, now: dt.datetime) -> list[ActiveBlock]:
        """One statement: the entries in force, each blocked mobile joined to its account."""
        query = (
            select(BlocklistEntry.mobile, BlocklistEntry.ip, BlocklistEntry.until, Member.id)
            .outerjoin(Member, Member.mobile == BlocklistEntry.mobile)
            .where(or_(BlocklistEntry.until.is_(None), BlocklistEntry.until > now))
        )
        async with self._sessionmaker() as session:
            rows = (await session.execute(query)).all()
        return [
            ActiveBlock(mobile, ip, as_utc(until) if until is not None else None, member_id)
            for mobile, ip, until, member_id in rows
        ]
