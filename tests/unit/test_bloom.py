"""The Bloom filter's pure arithmetic: positions, bitmap layout (Redis bit order), error rate."""

from __future__ import annotations

import random

import pytest

from railbook.domain.bloom import BloomShape, bit_is_set, build_bitmap, station_term_key, train_day_key


def test_positions_are_stable_distinct_and_in_range() -> None:
    shape = BloomShape(8192, 7)
    first = shape.positions("station:北京南")
    assert first == shape.positions("station:北京南")
    assert len(first) == 7
    assert all(0 <= p < 8192 for p in first)
    assert first != shape.positions("station:北京西")


def test_bitmap_uses_redis_bit_order() -> None:
    # Redis numbers bits from the most significant bit of byte 0 (SETBIT key 0 1 → b"\x80").
    shape = BloomShape(64, 1)
    key = next(k for k in (f"k{i}" for i in range(1000)) if shape.positions(k)[0] == 9)
    bits = build_bitmap(shape, [key])
    assert bits == bytearray([0x00, 0x40, 0, 0, 0, 0, 0, 0])
    assert bit_is_set(bits, 9)
    assert not bit_is_set(bits, 8)
    assert not bit_is_set(bits, 10_000)  # beyond the end reads as 0, as in Redis


def test_members_always_found_and_outsiders_rarely() -> None:
    rng = random.Random(5)
    members = [station_term_key(f"站{rng.random()}") for _ in range(2000)]
    shape = BloomShape.for_capacity(len(members), 0.01)
    bits = build_bitmap(shape, members)
    assert all(all(bit_is_set(bits, p) for p in shape.positions(k)) for k in members)
    outsiders = [station_term_key(f"假{i}") for i in range(20_000)]
    false_hits = sum(all(bit_is_set(bits, p) for p in shape.positions(k)) for k in outsiders)
    assert false_hits / len(outsiders) < 0.03
    assert shape.false_positive_rate(len(members)) == pytest.approx(0.01, rel=0.5)


def test_default_shape_keeps_a_large_network_nearly_exact() -> None:
    # 3,000 stations with names, codes and cities plus 500 trains × 15 days.
    assert BloomShape().false_positive_rate(3 * 3000 + 500 * 15) < 1e-6


def test_shape_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        BloomShape(10, 3)
    with pytest.raises(ValueError):
        BloomShape(64, 0)


def test_key_spaces_do_not_collide() -> None:
    assert station_term_key("G1") != train_day_key("G1", "2026-12-01")
