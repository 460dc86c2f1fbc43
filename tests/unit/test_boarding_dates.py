"""Boarding dates (the day a train leaves the passenger's station) against service dates (the day it
left its origin), and the sale cut-off."""

from __future__ import annotations

import datetime as dt

import pytest

from railbook.domain.fees import BEIJING, departure_at
from railbook.domain.sale import sale_closed
from railbook.domain.timetable import (
    BOARDING_LAG_DAYS,
    MAX_DAY_OFFSET,
    boarding_date,
    departure_day,
    service_date,
    service_dates_for,
)

D = dt.date(2026, 12, 1)


@pytest.mark.parametrize(
    ("departs", "arrives", "day", "expected"),
    [
        ("23:00", None, 0, 0),  # the origin, late in the evening
        ("01:15", "01:10", 1, 1),  # reached and left after midnight
        ("00:05", "23:58", 0, 1),  # reached before midnight, left after it
        ("12:00", "11:50", 2, 2),
        ("10:24", "10:22", 0, 0),
    ],
)
def test_the_departure_day_of_a_stop(departs: str, arrives: str | None, day: int, expected: int) -> None:
    assert departure_day(departs, arrives, day) == expected


def test_boarding_and_service_dates_are_inverse() -> None:
    # Origin 23:00 on D−1, a stop at 01:15 on day 1: boarded there on D.
    days_after = departure_day("01:15", "01:10", 1)
    assert service_date(D, days_after) == D - dt.timedelta(days=1)
    assert boarding_date(D - dt.timedelta(days=1), days_after) == D
    for k in range(MAX_DAY_OFFSET + 2):
        assert boarding_date(service_date(D, k), k) == D


def test_a_boarding_date_may_belong_to_the_last_few_service_dates() -> None:
    dates = service_dates_for(D)
    assert dates[0] == D and dates[-1] == D - dt.timedelta(days=BOARDING_LAG_DAYS)
    assert dates == sorted(dates, reverse=True) and len(set(dates)) == BOARDING_LAG_DAYS + 1
    # The latest stop a train can leave on: day MAX_DAY_OFFSET, reached before midnight, left after.
    assert service_date(D, departure_day("00:10", "23:55", MAX_DAY_OFFSET)) in dates


def test_sale_closes_the_cutoff_before_departure_in_beijing_time() -> None:
    leaves = departure_at(D, "09:00")
    assert leaves == dt.datetime(2026, 12, 1, 1, 0, tzinfo=dt.UTC)  # 09:00 Beijing is 01:00 UTC
    at = dt.datetime(2026, 12, 1, 0, 54, 59, tzinfo=dt.UTC)
    assert not sale_closed(leaves, at, 5)
    assert sale_closed(leaves, at + dt.timedelta(seconds=1), 5)  # exactly five minutes before
    assert sale_closed(leaves, leaves, 0)  # departed
    assert sale_closed(leaves, leaves + dt.timedelta(hours=3), 5)
    assert not sale_closed(leaves, leaves - dt.timedelta(minutes=1), 0)
    # A stop reached after midnight: the boarding date's clock time, in Beijing.
    overnight = departure_at(D - dt.timedelta(days=1), "01:15", 1)
    assert overnight == dt.datetime(2026, 12, 1, 1, 15, tzinfo=BEIJING)
