"""The reference model of segment inventory: policy examples (see railbook.domain.inventory)."""

from __future__ import annotations

import pytest

from railbook.domain.errors import InvalidInput, SoldOut
from railbook.domain.inventory import DayInventory, diff_masks, free_runs, run_containing
from railbook.domain.seating import (
    AllocationRequest,
    CarriageSpec,
    PassengerSeatRequest,
    class_seats,
    journey_mask,
)


def day(n_stops: int = 5, carriages: tuple[CarriageSpec, ...] | None = None, **kw: object) -> DayInventory:
    cars = carriages or (
        CarriageSpec(1, "business", 1),
        CarriageSpec(2, "second", 2),
        CarriageSpec(3, "second", 2),
    )
    classes = {c.seat_class for c in cars}
    return DayInventory.from_masks(n_stops, {c: class_seats(cars, c) for c in classes}, **kw)  # type: ignore[arg-type]


def req(x: int, y: int, *prefs: str | None, cls: str = "second") -> AllocationRequest:
    return AllocationRequest(x, y, tuple(PassengerSeatRequest(cls, p) for p in (prefs or (None,))))


def test_runs_of_a_mask() -> None:
    assert free_runs(0, 5) == [(0, 4)]
    assert free_runs(journey_mask(1, 2), 5) == [(0, 1), (2, 4)]
    assert free_runs(journey_mask(0, 4), 5) == []
    assert run_containing(journey_mask(3, 4), 5, 1, 2) == (0, 3)


def test_a_seat_sold_a_to_b_stays_on_sale_b_to_c() -> None:
    d = day(3, (CarriageSpec(1, "business", 1),))
    seats = [d.allocate(req(0, 1, cls="business"))[0].seat_index for _ in range(3)]
    assert sorted(seats) == [0, 1, 2]
    assert d.remaining(0, 1) == {"business": 0}
    assert d.remaining(1, 2) == {"business": 3}
    assert d.remaining(0, 2) == {"business": 0}
    with pytest.raises(SoldOut) as e:
        d.allocate(req(0, 2, cls="business"))
    assert e.value.code == "SOLD_OUT"
    after = [d.allocate(req(1, 2, cls="business"))[0].seat_index for _ in range(3)]
    assert sorted(after) == [0, 1, 2]
    d.check()


def test_best_fit_keeps_long_journeys_sellable_first_fit_does_not() -> None:
    # Seat 0 is free, seat 1 is sold 0→2. A 2→4 journey best fits seat 1 (run 2..4), leaving
    # seat 0 whole for 0→4; first fit takes seat 0 and 0→4 is then sold out.
    for policy, second_ok in (("best_fit", True), ("first_fit", False)):
        cars = (CarriageSpec(1, "business", 1),)
        d = DayInventory.from_masks(
            5,
            {"business": class_seats(cars, "business")[:3]},
            {"business": [0, journey_mask(0, 2), journey_mask(0, 4)]},
            policy=policy,
        )  # type: ignore[arg-type]
        got = d.allocate(req(2, 4, cls="business"))[0].seat_index
        assert got == (1 if second_ok else 0)
        if second_ok:
            assert d.allocate(req(0, 4, cls="business"))[0].seat_index == 0
        else:
            with pytest.raises(SoldOut):
                d.allocate(req(0, 4, cls="business"))


def test_best_fit_ties_go_to_the_lowest_seat() -> None:
    d = day()
    assert [a.seat_index for a in d.allocate(req(0, 4))] == [0]
    assert [a.seat_index for a in d.allocate(req(1, 3))] == [1]


def test_group_sits_together_nearest_the_best_fit_seat() -> None:
    d = day()
    d.allocate(req(0, 4))  # seat 0 (01-01A of carriage 2) sold whole
    out = d.allocate(req(0, 4, None, None, None))
    assert [a.seat_index for a in out] == [1, 2, 3]
    assert [a.seat_name for a in out] == ["02-01B", "02-01C", "02-01D"]


def test_letters_in_one_row_else_two_adjacent_rows() -> None:
    d = day()
    out = d.allocate(req(0, 4, "A", "F"))
    assert [a.seat_name for a in out] == ["02-01A", "02-01F"]
    # Two A need two adjacent rows of one carriage: 02-01A is taken, so carriage 3 rows 1-2.
    out = d.allocate(req(0, 4, "A", "A"))
    assert [a.seat_name for a in out] == ["03-01A", "03-02A"]


def test_two_same_letters_take_two_adjacent_rows() -> None:
    d = day()
    out = d.allocate(req(0, 4, "C", "C"))
    assert [a.seat_name for a in out] == ["02-01C", "02-02C"]


def test_impossible_letters_fall_back_to_seats_without_preference() -> None:
    d = day()
    out = d.allocate(req(0, 4, "A", "A", "A"))  # three A never fit two rows
    assert len({a.seat_index for a in out}) == 3
    assert [a.seat_index for a in out] == [0, 1, 2]


def test_a_named_seat_is_given_or_refused() -> None:
    d = day()
    assert d.allocate(req(1, 3, "03-02F"))[0].seat_name == "03-02F"
    with pytest.raises(SoldOut) as e:
        d.allocate(req(2, 4, "03-02F"))
    assert e.value.code == "SEAT_TAKEN"
    assert d.allocate(req(3, 4, "03-02F"))[0].seat_name == "03-02F"
    for bad in ("09-01A", "03-03A", "3-02F", "03-02E", "03-02f", "X"):
        with pytest.raises(InvalidInput) as ie:
            d.allocate(req(0, 1, bad))
        assert ie.value.code == "BAD_SEAT_PREF"


def test_all_or_nothing_and_bad_input_change_nothing() -> None:
    d = day(carriages=(CarriageSpec(1, "business", 1), CarriageSpec(2, "second", 1)))
    before = d.masks()
    cases: list[tuple[AllocationRequest, str]] = [
        (req(0, 4, None, None, None, None, None, None), "BAD_PASSENGERS"),
        (req(2, 2), "BAD_JOURNEY"),
        (req(3, 1), "BAD_JOURNEY"),
        (req(0, 5), "BAD_JOURNEY"),
        (req(-1, 2), "BAD_JOURNEY"),
        (req(0, 1, cls="hard_sleeper"), "BAD_SEAT_CLASS"),
        (req(0, 1, cls="nonsense"), "BAD_SEAT_CLASS"),
        (req(0, 1, "02-01A", "02-01A"), "BAD_SEAT_PREF"),
        (
            AllocationRequest(
                0,
                4,
                (
                    PassengerSeatRequest("second"),
                    PassengerSeatRequest("business"),
                    PassengerSeatRequest("business"),
                    PassengerSeatRequest("business"),
                    PassengerSeatRequest("business"),
                ),
            ),
            "SOLD_OUT",
        ),
    ]
    for r, code in cases:
        with pytest.raises((InvalidInput, SoldOut)) as e:
            d.allocate(r)
        assert e.value.code == code, r
        assert d.masks() == before
    with pytest.raises(InvalidInput) as e:
        d.release(0, 2, [("second", 1), ("second", 99)])
    assert e.value.code == "BAD_SEAT"
    with pytest.raises(InvalidInput) as e:
        d.release(0, 2, [("second", 1), ("first", 0)])
    assert e.value.code == "BAD_SEAT_CLASS"
    assert d.masks() == before
    d.check()


def test_release_restores_exactly_what_allocate_took() -> None:
    d = day(7)
    base = d.allocate(req(2, 5))
    snapshot = d.masks()
    runs = [row[:] for row in d.classes["second"].runs]
    out = d.allocate(req(1, 6, None, None))
    d.release(1, 6, [(a.seat_class, a.seat_index) for a in out])
    assert d.masks() == snapshot
    assert d.classes["second"].runs == runs
    d.release(2, 5, [(a.seat_class, a.seat_index) for a in base])
    assert d.remaining(0, 6)["second"] == 20
    d.check()


def test_remaining_equals_free_seats_and_sold_per_segment() -> None:
    d = day(6)
    d.allocate(req(0, 3, None, None))
    d.allocate(req(2, 5))
    for x in range(6):
        for y in range(x + 1, 6):
            free = sum(d.classes["second"].is_free(s, x, y) for s in range(20))
            assert d.remaining(x, y)["second"] == free
    assert d.sold_per_segment()["second"] == [2, 2, 3, 1, 1]


def test_diff_masks_describes_drift() -> None:
    assert diff_masks({"second": [0, 3]}, {"second": [0, 3]}) == []
    out = diff_masks({"second": [0, 3], "first": [0]}, {"second": [1, 3], "business": [0]})
    assert any("first" in s and "missing" in s for s in out)
    assert any("business" in s for s in out)
    assert any("seat 0" in s for s in out)
