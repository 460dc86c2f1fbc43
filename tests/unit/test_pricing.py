"""Fares: class rates per km, 12306 rounding to 0.5 yuan, minimum fares; and the per-pair counts."""

from __future__ import annotations

from decimal import Decimal

import pytest

from railbook.domain.pricing import (
    fare_fen,
    fares_by_type,
    pair_fares,
    passenger_fare_fen,
    round_fare_fen,
    yuan_text,
)
from railbook.domain.seating import journey_mask
from railbook.domain.segments import pair_remaining, sold_per_segment


@pytest.mark.parametrize(
    ("yuan", "fen"),
    [
        ("10.00", 1000),
        ("10.24", 1000),
        ("10.25", 1050),
        ("10.49", 1050),
        ("10.74", 1050),
        ("10.75", 1100),
        ("10.99", 1100),
        ("0.24", 0),
    ],
)
def test_rounding_to_half_yuan(yuan: str, fen: int) -> None:
    assert round_fare_fen(Decimal(yuan)) == fen


def test_high_speed_rates() -> None:
    assert fare_fen("G", "second", 1318) == 60650  # 1318 × 0.46 = 606.28 → 606.50
    assert fare_fen("G", "first", 1318) == 97000  # × 0.736 = 970.05 → 970.00
    assert fare_fen("G", "business", 1318) == 191000  # × 1.449 = 1909.78 → 1910.00
    assert fare_fen("D", "second", 100) == 4600


def test_conventional_rates() -> None:
    assert fare_fen("K", "hard_seat", 1463) == 12600  # 1463 × 0.0861 = 125.96 → 126.00
    assert fare_fen("T", "hard_sleeper", 1463) == 21950  # 219.45 → 219.50
    assert fare_fen("Z", "soft_sleeper", 1463) == 33650  # 336.49 → 336.50


def test_minimum_fare() -> None:
    assert fare_fen("G", "second", 5) == 1000
    assert fare_fen("K", "hard_seat", 5) == 200


def test_unknown_class_is_an_error() -> None:
    with pytest.raises(KeyError):
        fare_fen("G", "economy", 100)


def test_pair_fares_cover_every_pair() -> None:
    fares = pair_fares("G", "second", [0, 406, 1318])
    assert set(fares) == {(0, 1), (0, 2), (1, 2)}
    assert fares[(1, 2)] == fare_fen("G", "second", 912)
    assert yuan_text(fares[(0, 2)]) == "606.50"
    assert yuan_text(5) == "0.05"


def test_pair_remaining_and_sold_per_segment() -> None:
    # Four stops; seat 0 sold 0→2, seat 1 sold 1→3, seat 2 sold 2→3, seat 3 free.
    masks = [journey_mask(0, 2), journey_mask(1, 3), journey_mask(2, 3), 0]
    assert sold_per_segment(4, masks) == [1, 2, 2]
    remaining = pair_remaining(4, masks)
    assert remaining == {"0-1": 3, "0-2": 2, "0-3": 1, "1-2": 2, "1-3": 1, "2-3": 2}


def test_pair_remaining_brute_force_agrees() -> None:
    import random

    rng = random.Random(5)
    n = 8
    masks = []
    for _ in range(200):
        a = rng.randrange(n - 1)
        b = rng.randrange(a + 1, n)
        masks.append(journey_mask(a, b) if rng.random() < 0.6 else 0)
    remaining = pair_remaining(n, masks)
    for i in range(n):
        for j in range(i + 1, n):
            assert remaining[f"{i}-{j}"] == sum(1 for m in masks if m & journey_mask(i, j) == 0)


@pytest.mark.parametrize(
    ("fare_type", "seat_class", "adult_fen", "fen"),
    [
        ("adult", "second", 55300, 55300),
        ("child", "second", 55300, 27650),  # 276.50
        ("child", "business", 174850, 87450),  # 874.25 → 874.50
        ("disabled_military", "first", 93300, 46650),
        ("student", "second", 55300, 41500),  # 414.75 → 415.00
        ("student", "hard_seat", 10250, 5150),  # 51.25 → 51.50
        ("student", "first", 93300, 93300),  # full fare outside second and hard seat
        ("student", "hard_sleeper", 18000, 18000),
    ],
)
def test_fares_by_passenger_type(fare_type: str, seat_class: str, adult_fen: int, fen: int) -> None:
    assert passenger_fare_fen(adult_fen, fare_type, seat_class) == fen
    assert fares_by_type(adult_fen, seat_class)[fare_type] == fen
    assert fen % 50 == 0
