"""Counts derived from seat masks: what is sold per segment and what remains per station pair.

A seat's mask has bit k set when segment k (stop k → k+1) is held. Seats sharing a mask are
counted once per distinct mask, so a mostly unsold 1,000-seat train costs a handful of checks
per pair rather than a thousand.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from railbook.domain.seating import journey_mask


def pair_key(from_index: int, to_index: int) -> str:
    """The API's name of a station pair: ``"0-3"``."""
    return f"{from_index}-{to_index}"


def pair_remaining(n_stops: int, masks: Iterable[int]) -> dict[str, int]:
    """Seats free for the whole journey ``i → j``, for every pair i < j."""
    by_mask = Counter(masks)
    result: dict[str, int] = {}
    for i in range(n_stops):
        for j in range(i + 1, n_stops):
            journey = journey_mask(i, j)
            result[pair_key(i, j)] = sum(count for mask, count in by_mask.items() if mask & journey == 0)
    return result


def sold_per_segment(n_stops: int, masks: Iterable[int]) -> list[int]:
    """How many seats hold each segment ``0..n_stops-2``."""
    by_mask = Counter(masks)
    return [sum(count for mask, count in by_mask.items() if mask >> k & 1) for k in range(n_stops - 1)]
