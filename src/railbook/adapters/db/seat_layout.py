"""The seats of train-days and the tickets holding them, as search reads them (seat maps, and the
counts it derives from the system of record while Redis is unreachable). Read-only."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from railbook.adapters.db.models import DailySeat, Ticket
from railbook.domain.seating import journey_mask
from railbook.services.search.ports import SeatPlace, TicketSpan


class SeatLayoutRepository:
    """Seat layouts, sold masks and active tickets, over the process's session factory."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self.sessionmaker = sessionmaker

    async def seat_layout(self, daily_train_id: int, seat_class: str) -> list[SeatPlace]:
        """(seat_index, carriage, row, letter) of a class, from ``daily_seat`` (frozen per day)."""
        async with self.sessionmaker() as session:
            rows = (
                await session.execute(
                    select(DailySeat.seat_index, DailySeat.carriage, DailySeat.seat_row, DailySeat.letter)
                    .where(DailySeat.daily_train_id == daily_train_id, DailySeat.seat_class == seat_class)
                    .order_by(DailySeat.seat_index)
                )
            ).all()
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    async def sold_masks(self, daily_train_id: int, statuses: Sequence[str]) -> dict[str, dict[int, int]]:
        """Sold-segment masks derived from the tickets in ``statuses``: class → seat index → mask."""
        async with self.sessionmaker() as session:
            rows = await session.execute(
                select(Ticket.seat_class, Ticket.seat_index, Ticket.from_index, Ticket.to_index).where(
                    Ticket.daily_train_id == daily_train_id, Ticket.status.in_(statuses)
                )
            )
            masks: dict[str, dict[int, int]] = defaultdict(dict)
            for r in rows.all():
                by_seat = masks[r.seat_class]
                by_seat[r.seat_index] = by_seat.get(r.seat_index, 0) | journey_mask(r.from_index, r.to_index)
        return masks

    async def seats_and_tickets(
        self, daily_train_ids: Sequence[int], statuses: Sequence[str]
    ) -> tuple[dict[tuple[int, str], int], list[TicketSpan]]:
        """Seats per (train-day, class) and the tickets in ``statuses``: two statements, one session."""
        async with self.sessionmaker() as session:
            seat_rows = (
                await session.execute(
                    select(DailySeat.daily_train_id, DailySeat.seat_class, func.count())
                    .where(DailySeat.daily_train_id.in_(daily_train_ids))
                    .group_by(DailySeat.daily_train_id, DailySeat.seat_class)
                )
            ).all()
            tickets = (
                await session.execute(
                    select(
                        Ticket.daily_train_id,
                        Ticket.seat_class,
                        Ticket.daily_seat_id,
                        Ticket.from_index,
                        Ticket.to_index,
                    ).where(Ticket.daily_train_id.in_(daily_train_ids), Ticket.status.in_(statuses))
                )
            ).all()
        return {(r[0], r[1]): int(r[2]) for r in seat_rows}, [TicketSpan(*t) for t in tickets]
