"""Figures /metrics reads from the system of record at scrape time (one cheap statement each)."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from railbook.adapters.db.models import Waitlist

# FILLING: claimed by a process placing its order, still shown (and counted) as waiting.
WAITING = ("WAITING", "FILLING")


async def waitlist_waiting(sessionmaker: async_sessionmaker[AsyncSession]) -> int:
    """Waitlist entries still waiting for seats (an index range on ``status``)."""
    async with sessionmaker() as session:
        count = (
            await session.execute(
                select(func.count()).select_from(Waitlist).where(Waitlist.status.in_(WAITING))
            )
        ).scalar_one()
    return int(count)
