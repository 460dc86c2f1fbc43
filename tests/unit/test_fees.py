"""Refund fees by time before departure (domain/fees.py)."""

from __future__ import annotations

import datetime as dt

import pytest

from railbook.domain.fees import (
    BEIJING,
    RefundAfterDeparture,
    departure_at,
    refund_quote,
    round_fee_fen,
)

DEPARTS = dt.datetime(2026, 12, 10, 9, 0, tzinfo=BEIJING)


def before(**delta: float) -> dt.datetime:
    return DEPARTS - dt.timedelta(**delta)


@pytest.mark.parametrize(
    ("now", "fee_fen"),
    [
        (before(days=30), 0),
        (before(days=8), 0),  # exactly 8 days: still free
        (before(days=8) + dt.timedelta(seconds=1), 2750),  # 5 % of 553.00 = 27.65 → 27.50
        (before(hours=48), 2750),
        (before(hours=48) + dt.timedelta(seconds=1), 5550),  # 10 % = 55.30 → 55.50
        (before(hours=24), 5550),
        (before(hours=24) + dt.timedelta(seconds=1), 11050),  # 20 % = 110.60 → 110.50
        (before(minutes=1), 11050),
    ],
)
def test_fee_bands(now: dt.datetime, fee_fen: int) -> None:
    quote = refund_quote(55300, DEPARTS, now)
    assert quote.fee_fen == fee_fen
    assert quote.refund_fen == 55300 - fee_fen


@pytest.mark.parametrize("now", [DEPARTS, DEPARTS + dt.timedelta(minutes=5)])
def test_no_refund_once_departed(now: dt.datetime) -> None:
    with pytest.raises(RefundAfterDeparture) as info:
        refund_quote(55300, DEPARTS, now)
    assert info.value.code == "REFUND_AFTER_DEPARTURE"


@pytest.mark.parametrize(
    ("exact", "rounded"),
    [(0, 0), (24, 0), (25, 50), (74, 50), (75, 100), (1249, 1250), (1274, 1250), (1275, 1300)],
)
def test_fee_rounds_to_half_yuan(exact: int, rounded: int) -> None:
    from decimal import Decimal

    assert round_fee_fen(Decimal(exact)) == rounded


def test_fee_never_exceeds_fare() -> None:
    assert refund_quote(50, DEPARTS, before(hours=1)).fee_fen <= 50


def test_departure_uses_day_offset_and_beijing_time() -> None:
    at = departure_at(dt.date(2026, 12, 1), "00:30", day=1)
    assert at == dt.datetime(2026, 12, 1, 16, 30, tzinfo=dt.UTC)


def test_utc_clock_compares_with_beijing_departure() -> None:
    # 09:00 Beijing is 01:00 UTC: 23 hours before is 02:00 UTC the day before → 20 %.
    now = dt.datetime(2026, 12, 9, 2, 0, tzinfo=dt.UTC)
    assert refund_quote(10000, DEPARTS, now).fee_fen == 2000


@pytest.mark.parametrize(
    ("price_fen", "now", "fee_fen"),
    [
        (1000, before(days=3), 200),  # 5 % of 10.00 = 0.50, raised to the 2.00 minimum
        (3000, before(hours=30), 300),  # 10 % of 30.00 = 3.00, above the minimum
        (1000, before(days=9), 0),  # no fee due: no minimum either
        (150, before(hours=1), 150),  # the minimum never exceeds the fare
    ],
)
def test_fee_is_at_least_two_yuan_when_due(price_fen: int, now: dt.datetime, fee_fen: int) -> None:
    quote = refund_quote(price_fen, DEPARTS, now)
    assert (quote.fee_fen, quote.refund_fen) == (fee_fen, price_fen - fee_fen)
