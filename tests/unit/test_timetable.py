"""Validation of published trains: each family of bad input is refused, naming the stop or carriage."""

from __future__ import annotations

import dataclasses

import pytest

from railbook.domain.errors import InvalidInput
from railbook.domain.seating import SEAT_LETTERS, CarriageSpec
from railbook.domain.timetable import (
    StopSpec,
    TrainSpec,
    check_display_name,
    check_station_code,
    clock_text,
    validate_train,
)


def g1(**changes: object) -> TrainSpec:
    spec = TrainSpec(
        code="G1",
        kind="G",
        stops=(
            StopSpec("北京南", None, "09:00", 0),
            StopSpec("济南西", "10:22", "10:24", 406),
            StopSpec("上海虹桥", "13:28", None, 1318),
        ),
        carriages=(CarriageSpec(1, "business", 10), CarriageSpec(2, "second", 18)),
    )
    return dataclasses.replace(spec, **changes)  # type: ignore[arg-type]


def with_stop(index: int, **changes: object) -> TrainSpec:
    base = g1()
    stops = list(base.stops)
    stops[index] = dataclasses.replace(stops[index], **changes)  # type: ignore[arg-type]
    return dataclasses.replace(base, stops=tuple(stops))


def refused(spec: TrainSpec) -> InvalidInput:
    with pytest.raises(InvalidInput) as info:
        validate_train(spec)
    assert info.value.code == "VALIDATION_ERROR"
    return info.value


def test_a_good_train_passes_and_yields_minutes() -> None:
    times = validate_train(g1())
    assert [t.arrives for t in times] == [None, 10 * 60 + 22, 13 * 60 + 28]
    assert [t.departs for t in times] == [9 * 60, 10 * 60 + 24, None]


def test_overnight_train_with_day_offsets() -> None:
    spec = TrainSpec(
        "T109",
        "T",
        (
            StopSpec("北京", None, "19:43", 0),
            StopSpec("济南", "01:09", "01:15", 497, day=1),
            StopSpec("上海", "12:13", None, 1463, day=1),
        ),
        (CarriageSpec(1, "hard_sleeper", 11),),
    )
    times = validate_train(spec)
    assert times[1].arrives == 1440 + 69
    # Arriving before midnight, leaving after it: the departure counts on the next day.
    late = dataclasses.replace(
        spec,
        stops=(
            StopSpec("北京", None, "19:43", 0),
            StopSpec("德州", "23:58", "00:04", 357),
            StopSpec("上海", "12:13", None, 1463, day=1),
        ),
    )
    assert validate_train(late)[1].departs == 1440 + 4


@pytest.mark.parametrize(
    ("spec", "stop", "field"),
    [
        (with_stop(1, arrives="08:00", departs="08:02"), 1, "arrives"),  # before leaving stop 0
        (with_stop(2, arrives="10:23"), 2, "arrives"),  # before leaving stop 1
        (with_stop(1, arrives="10:24", departs="10:20"), 1, "departs"),  # leaves before it arrives
        (with_stop(2, day=0, arrives="09:30"), 2, "arrives"),
        (with_stop(1, day=1), 2, "day"),  # stop 2 back on day 0
        (with_stop(1, arrives="25:00"), 1, "arrives"),
        (with_stop(1, departs="10:2"), 1, "departs"),
        (with_stop(0, arrives="08:50"), 0, "arrives"),  # the first stop has no arrival
        (with_stop(2, departs="13:30"), 2, "departs"),  # the last stop has no departure
        (with_stop(1, arrives=None), 1, "arrives"),
        (with_stop(1, departs=None), 1, "departs"),
    ],
)
def test_times_out_of_order_or_missing(spec: TrainSpec, stop: int, field: str) -> None:
    error = refused(spec)
    assert error.details["stop"] == stop
    assert error.details["field"] == field


@pytest.mark.parametrize(("km1", "km2"), [(406, 406), (500, 406), (1318, 1318), (2000, 1318)])
def test_km_must_strictly_increase(km1: int, km2: int) -> None:
    spec = with_stop(1, km=km1) if km2 == 1318 else with_stop(2, km=km2)
    if km2 != 1318:
        spec = dataclasses.replace(
            spec, stops=(spec.stops[0], dataclasses.replace(spec.stops[1], km=km1), spec.stops[2])
        )
    error = refused(spec)
    assert error.details["field"] == "km"
    assert error.details["stop"] in (1, 2)


def test_negative_km_is_refused() -> None:
    assert refused(with_stop(0, km=-1)).details == {"stop": 0, "station": "北京南", "field": "km"}


def test_a_station_twice_is_refused() -> None:
    error = refused(with_stop(2, station="北京南"))
    assert error.details["stop"] == 2
    assert error.details["first"] == 0


@pytest.mark.parametrize("n", [0, 1, 61, 10_000])
def test_stop_count_bounds(n: int) -> None:
    stops = tuple(
        StopSpec(f"站{i}", None if i == 0 else "10:00", None if i == n - 1 else "10:00", i) for i in range(n)
    )
    error = refused(g1(stops=stops))
    assert error.details == {"field": "stops", "count": n}


def test_sixty_stops_are_allowed() -> None:
    stops = [StopSpec("站0", None, "00:00", 0)]
    for i in range(1, 60):
        t = i * 20
        stops.append(
            StopSpec(f"站{i}", clock_text(t), None if i == 59 else clock_text(t + 1), i * 10, day=t // 1440)
        )
    assert len(validate_train(g1(stops=tuple(stops)))) == 60


@pytest.mark.parametrize(
    ("carriages", "field"),
    [
        ((), "carriages"),
        (tuple(CarriageSpec(i, "second", 10) for i in range(1, 42)), "carriages"),
        ((CarriageSpec(1, "second", 10), CarriageSpec(1, "first", 10)), "carriage"),  # duplicated
        ((CarriageSpec(1, "second", 10), CarriageSpec(3, "first", 10)), "carriage"),  # gap: 1..N
        ((CarriageSpec(0, "second", 10),), "carriage"),
        ((CarriageSpec(1, "economy", 10),), "seat_class"),
        ((CarriageSpec(1, "second", 0),), "rows"),
        ((CarriageSpec(1, "second", 31),), "rows"),
    ],
)
def test_bad_carriages(carriages: tuple[CarriageSpec, ...], field: str) -> None:
    assert refused(g1(carriages=carriages)).details["field"] == field


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        ("G1", "D"),
        ("X1", "X"),
        ("G", "G"),
        ("G01", "G"),
        ("g1", "g"),
        ("G1234567", "G"),
        ("G1;", "G"),
        ("1461", "K"),
    ],
)
def test_train_codes(code: str, kind: str) -> None:
    assert refused(g1(code=code, kind=kind)).details["field"] in ("code", "kind")


@pytest.mark.parametrize("code", ["G1", "D2203", "K528", "Z99", "T109", "C2001", "Y1"])
def test_real_train_codes_pass(code: str) -> None:
    validate_train(g1(code=code, kind=code[0]))


@pytest.mark.parametrize("code", ["VN", "VNPX", "vnp", "V1P", "北京南", ""])
def test_station_codes(code: str) -> None:
    with pytest.raises(InvalidInput):
        check_station_code(code)


def test_sql_looking_names_are_just_names() -> None:
    # Stored verbatim through bound parameters; the domain only bounds length and control characters.
    check_display_name("x'); DROP TABLE train;--", "name")
    with pytest.raises(InvalidInput):
        check_display_name("北京\x00南", "name")
    with pytest.raises(InvalidInput):
        check_display_name("a" * 33, "name")
    with pytest.raises(InvalidInput):
        check_display_name("   ", "name")


def test_letters_of_every_class_are_listed_in_sorted_order() -> None:
    # Opening a day numbers seats in SQL ordered by letter; that equals the domain's numbering
    # only because each class lists its letters in sorted order.
    for letters in SEAT_LETTERS.values():
        assert list(letters) == sorted(letters)
