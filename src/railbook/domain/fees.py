"""Refund fees by how long before departure a ticket is returned (the 12306 rules).

- 8 days (192 hours) or more before departure: free;
- from 48 hours up to 8 days: 5 % of the fare;
- from 24 up to 48 hours: 10 %;
- less than 24 hours: 20 %;
- at or after departure: no refund.
A fee is rounded to 0.5 yuan the way fares are (below 0.25 down, from 0.25 to 0.5, from 0.75
up to the next yuan), is at least 2.00 yuan whenever one is due, and never exceeds the fare.
Timetable clock times are Beijing time (UTC+8).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from railbook.domain.errors import Conflict

BEIJING = dt.timezone(dt.timedelta(hours=8), "CST")
FEE_STEP_FEN = 50
MIN_FEE_FEN = 200  # 2.00 yuan: the least fee charged whenever a fee is due

# (at least this long before departure, fee rate): checked in order, first match wins.
FEE_BANDS: tuple[tuple[dt.timedelta, Decimal], ...] = (
    (dt.timedelta(days=8), Decimal("0")),
    (dt.timedelta(hours=48), Decimal("0.05")),
    (dt.timedelta(hours=24), Decimal("0.10")),
    (dt.timedelta(0), Decimal("0.20")),
)


class RefundAfterDeparture(Conflict):
    """The train has left the passenger's station: the ticket can no longer be refunded."""

    code = "REFUND_AFTER_DEPARTURE"


@dataclass(frozen=True, slots=True)
class RefundQuote:
    """What a refund pays back and what it keeps, in fen."""

    refund_fen: int
    fee_fen: int


def departure_at(service_date: dt.date, departs: str, day: int = 0) -> dt.datetime:
    """When a train leaves a stop: the service date plus the stop's day offset, at its Beijing clock time."""
    hours, minutes = (int(part) for part in departs.split(":"))
    local = dt.datetime.combine(service_date + dt.timedelta(days=day), dt.time(hours, minutes), BEIJING)
    return local


def fee_rate(departs_at: dt.datetime, now: dt.datetime) -> Decimal:
    """The share of the fare kept when refunding at ``now``; RefundAfterDeparture once the train has left."""
    left = departs_at - now
    for at_least, rate in FEE_BANDS:
        if left >= at_least and left > dt.timedelta(0):
            return rate
    raise RefundAfterDeparture(
        "The train has already left; the ticket cannot be refunded.",
        details={"departs_at": departs_at.isoformat()},
    )


def round_fee_fen(exact_fen: Decimal) -> int:
    """Nearest multiple of 0.5 yuan, halves up, in fen."""
    steps = (exact_fen / FEE_STEP_FEN).quantize(Decimal(1), rounding=ROUND_HALF_UP)
    return int(steps) * FEE_STEP_FEN


def refund_quote(price_fen: int, departs_at: dt.datetime, now: dt.datetime) -> RefundQuote:
    """Fee and amount paid back for a ticket of ``price_fen`` refunded at ``now``."""
    rate = fee_rate(departs_at, now)
    fee = 0 if rate == 0 else max(MIN_FEE_FEN, round_fee_fen(Decimal(price_fen) * rate))
    fee = min(price_fen, fee)
    return RefundQuote(refund_fen=price_fen - fee, fee_fen=fee)


__all__ = [
    "BEIJING",
    "FEE_BANDS",
    "MIN_FEE_FEN",
    "RefundAfterDeparture",
    "RefundQuote",
    "departure_at",
    "fee_rate",
    "refund_quote",
    "round_fee_fen",
]
