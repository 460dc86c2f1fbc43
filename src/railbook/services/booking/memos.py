"""What the accept path remembers in process: the member's passengers and recent sold-out answers."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from railbook.domain.errors import NotFound, SoldOut

if TYPE_CHECKING:
    from railbook.services.booking.context import OrderContext

# The member's passengers, read once and remembered briefly.

PASSENGER_CACHE_SECONDS = 10.0
CACHE_BOUND = 100_000


@dataclass
class MemberCache:
    """Per process: the member's passengers (id → name), remembered briefly.

    Only a fact that can go stale harmlessly is kept: a passenger added since is looked up at once
    (a miss asks the shared cache, then the database); one deleted since may still be booked for
    ``PASSENGER_CACHE_SECONDS`` (the ticket then names a passenger the member removed, as it would
    had the order come a moment earlier).
    """

    passengers: dict[int, tuple[float, dict[int, str]]] = field(default_factory=dict)

    def names(self, member_id: int, ids: Sequence[int], now: float) -> dict[int, str] | None:
        """The names of all these passengers, or None unless every one is remembered."""
        hit = self.passengers.get(member_id)
        if hit is None or hit[0] <= now or any(pid not in hit[1] for pid in ids):
            return None
        return hit[1]

    def remember(self, member_id: int, found: Mapping[int, str], now: float) -> None:
        """Add these passengers to what is remembered of the member."""
        if len(self.passengers) > CACHE_BOUND:
            self.passengers.clear()
        held = self.passengers.get(member_id)
        names = dict(held[1]) if held is not None and held[0] > now else {}
        names.update(found)
        self.passengers[member_id] = (now + PASSENGER_CACHE_SECONDS, names)


# Sold-out answers without touching the protections.
#
# After the allocator refused an order as SOLD_OUT, later orders for that train-day, class and a
# journey containing that one first ask the allocator's O(1) remaining count (one read-only script)
# and are refused at once when it cannot cover them: exactly the allocator's own rule (remaining <
# passengers of the class), so a seat put back by a cancel or refund is on sale again at the next
# request. The memo only picks who pays for that read; it never answers by itself, so it cannot go
# stale. Saves the admission round trip and its undo on every sold-out answer.
SOLD_OUT_MEMO_SECONDS = 2.0


@dataclass
class SoldOutMemo:
    """Per process: (train, date) → {(class, from, to): until}, journeys recently refused as sold out."""

    days: dict[tuple[str, dt.date], dict[tuple[str, int, int], float]] = field(default_factory=dict)

    def suspects(self, train_code: str, date: dt.date, classes: Sequence[str], i: int, j: int) -> bool:
        """True when a journey inside i→j of one of these classes was sold out a moment ago."""
        seen = self.days.get((train_code, date))
        if not seen:
            return False
        now = time.monotonic()
        return any(
            seen.get((c, a, b), 0.0) > now for c in classes for a in range(i, j) for b in range(a + 1, j + 1)
        )

    def remember(self, train_code: str, date: dt.date, classes: Sequence[str], i: int, j: int) -> None:
        """These classes were refused as sold out for i→j just now."""
        if len(self.days) > 1024:
            self.days.clear()
        seen = self.days.setdefault((train_code, date), {})
        until = time.monotonic() + SOLD_OUT_MEMO_SECONDS
        for c in classes:
            seen[(c, i, j)] = until

    def forget(self, train_code: str, date: dt.date, classes: Sequence[str], i: int, j: int) -> None:
        """Seats are free for i→j again: so are they for every journey inside it."""
        seen = self.days.get((train_code, date))
        if seen:
            for key in [k for k in seen if k[0] in classes and i <= k[1] and k[2] <= j]:
                del seen[key]


async def refuse_if_sold_out(
    container: OrderContext, train_code: str, date: dt.date, need: Mapping[str, int], i: int, j: int
) -> None:
    """SOLD_OUT at the cost of one read when a recent refusal makes it likely (see SoldOutMemo);
    ``need``: passengers per seat class."""
    memo = container.sold_out_memo
    if not memo.suspects(train_code, date, list(need), i, j):
        return
    try:
        left = await container.allocator.remaining(train_code, date, i, j)
    except NotFound:
        return  # the day is not loaded: the allocating path loads it
    short = [c for c, k in need.items() if left.get(c, 0) < k]
    if not short:
        memo.forget(train_code, date, list(need), i, j)
        return
    memo.remember(train_code, date, short, i, j)
    raise SoldOut(f"{short[0]} sold out")
