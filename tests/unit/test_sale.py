"""domain/sale.py: when online sale of a journey closes, and when two trips of one person collide."""

from __future__ import annotations

import datetime as dt

import pytest

from railbook.domain.fees import BEIJING
from railbook.domain.sale import Trip, sale_closed, sale_closes_at, train_day_name

LEAVES = dt.datetime(2030, 5, 1, 8, 0, tzinfo=BEIJING)


def test_sale_closes_the_cutoff_before_the_train_leaves() -> None:
    assert sale_closes_at(LEAVES, 5) == dt.datetime(2030, 5, 1, 7, 55, tzinfo=BEIJING)
    assert sale_closes_at(LEAVES, 0) == LEAVES


@pytest.mark.parametrize(
    ("minutes_before", "closed"),
    [(60, False), (5.01, False), (5, True), (1, True), (0, True), (-30, True)],
)
def test_sale_closed_from_the_cutoff_on(minutes_before: float, closed: bool) -> None:
    now = LEAVES - dt.timedelta(minutes=minutes_before)
    assert sale_closed(LEAVES, now, 5) is closed


def test_sale_closed_compares_instants_not_clock_faces() -> None:
    """07:57 Beijing is 23:57 UTC the day before: the same instant, inside a 5-minute cut-off."""
    now_utc = dt.datetime(2030, 4, 30, 23, 57, tzinfo=dt.UTC)
    assert sale_closed(LEAVES, now_utc, 5)
    assert not sale_closed(LEAVES, now_utc - dt.timedelta(minutes=10), 5)


def _trip(day: str, starts: int, ends: int) -> Trip:
    return Trip(day, starts, ends)


@pytest.mark.parametrize(
    ("a", "b", "collide"),
    [
        ((0, 100), (50, 150), True),  # overlap
        ((0, 100), (10, 20), True),  # one inside the other
        ((10, 20), (0, 100), True),
        ((0, 100), (100, 200), False),  # one ends as the other starts
        ((100, 200), (0, 100), False),
        ((0, 100), (101, 200), False),  # disjoint
        ((0, 100), (0, 100), True),  # the same times
    ],
)
def test_trips_on_different_train_days_collide_when_their_times_overlap(
    a: tuple[int, int], b: tuple[int, int], collide: bool
) -> None:
    first, second = _trip("G1:2030-05-01", *a), _trip("G2:2030-05-01", *b)
    assert first.collides(second) is collide
    assert second.collides(first) is collide


def test_two_trips_on_one_train_day_always_collide() -> None:
    """One person, one seat on a train-day: even journeys that do not overlap in time (A→B, then C→D
    on the same train) collide."""
    day = train_day_name("G1", dt.date(2030, 5, 1))
    assert _trip(day, 0, 100).collides(_trip(day, 200, 300))
    assert _trip(day, 0, 100).collides(_trip(day, 100, 200))


def test_train_day_name_is_the_code_and_the_service_date() -> None:
    assert train_day_name("G1", dt.date(2030, 5, 1)) == "G1:2030-05-01"
    assert train_day_name("G1", "2030-05-01") == train_day_name("G1", dt.date(2030, 5, 1))
    assert train_day_name("G1", dt.date(2030, 5, 1)) != train_day_name("G1", dt.date(2030, 5, 2))
