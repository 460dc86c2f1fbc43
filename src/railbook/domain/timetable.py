"""Train specifications and the rules a timetable entry must satisfy before it is stored.

A train runs every day along its stops ``0..n-1``. Clock times are ``HH:MM``; a stop's ``day``
says how many midnights the train has passed when it reaches that stop (0 on the departure day).
Validation failures raise ``InvalidInput`` naming the offending stop or carriage in ``details``,
so an administrator sees which line of the timetable to fix.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from dataclasses import dataclass

from railbook.domain.errors import InvalidInput
from railbook.domain.seating import SEAT_CLASSES, CarriageSpec

MIN_STOPS = 2
MAX_STOPS = 60  # 59 segments: a journey mask still fits in one 64-bit word
MAX_CARRIAGES = 40
MAX_ROWS = 30
MAX_DAY_OFFSET = 7
MAX_NAME_LENGTH = 32
MAX_DWELL_ACROSS_MIDNIGHT = 60  # minutes; a longer "dwell" that wraps the clock is a typo

TRAIN_KINDS = ("G", "D", "C", "K", "T", "Z", "Y")
TRAIN_CODE = re.compile(r"^([GDCKTZY])([1-9][0-9]{0,4})$")
STATION_CODE = re.compile(r"^[A-Z]{3}$")
CLOCK = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")
MINUTES_PER_DAY = 24 * 60
# A train leaves a stop at most this many days after its service date: the stop's day offset, plus one
# when it reaches the stop before midnight and leaves after it. A passenger's boarding date D can
# therefore belong to the service dates D - BOARDING_LAG_DAYS .. D.
BOARDING_LAG_DAYS = MAX_DAY_OFFSET + 1


@dataclass(frozen=True, slots=True)
class StopSpec:
    """One stop of a train: station (name or telegraph code), clock times, day offset, distance."""

    station: str
    arrives: str | None
    departs: str | None
    km: int
    day: int = 0


@dataclass(frozen=True, slots=True)
class TrainSpec:
    """A whole train as an administrator publishes it."""

    code: str
    kind: str
    stops: tuple[StopSpec, ...]
    carriages: tuple[CarriageSpec, ...]


@dataclass(frozen=True, slots=True)
class StopTimes:
    """Minutes after midnight of the departure day at which a train reaches and leaves a stop."""

    arrives: int | None
    departs: int | None


def clock_minutes(value: str) -> int:
    """Minutes after midnight of an ``HH:MM`` clock time; InvalidInput when it is not one."""
    match = CLOCK.match(value)
    if match is None:
        raise InvalidInput(f"{value!r} is not a clock time HH:MM.", details={"value": value})
    return int(match.group(1)) * 60 + int(match.group(2))


def clock_text(minutes: int) -> str:
    """``HH:MM`` of minutes after some midnight (the day part dropped)."""
    minutes %= MINUTES_PER_DAY
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def departure_minutes(departs: str, arrives: str | None, day: int) -> int:
    """Minutes after the service date's midnight at which a train leaves a stop (a stop reached before
    midnight and left after it is left on the next day)."""
    minutes = day * MINUTES_PER_DAY + clock_minutes(departs)
    if arrives is not None and clock_minutes(departs) < clock_minutes(arrives):
        minutes += MINUTES_PER_DAY
    return minutes


def arrival_minutes(arrives: str, day: int) -> int:
    """Minutes after the service date's midnight at which a train reaches a stop."""
    return day * MINUTES_PER_DAY + clock_minutes(arrives)


def departure_day(departs: str, arrives: str | None, day: int) -> int:
    """Days after the service date on which a train leaves a stop: a passenger boarding there boards on
    ``service_date + departure_day`` (12306 sells and shows a ticket under that boarding date)."""
    return departure_minutes(departs, arrives, day) // MINUTES_PER_DAY


def boarding_date(service_date: dt.date, days_after: int) -> dt.date:
    """The day a passenger boards a train that left its origin on ``service_date`` and leaves the
    boarding stop ``days_after`` days later."""
    return service_date + dt.timedelta(days=days_after)


def service_date(boarding: dt.date, days_after: int) -> dt.date:
    """The service date (departure from the origin) of a train boarded on ``boarding`` at a stop it
    leaves ``days_after`` days after its service date: the inverse of ``boarding_date``."""
    return boarding - dt.timedelta(days=days_after)


def service_dates_for(boarding: dt.date) -> list[dt.date]:
    """Every service date whose trains may leave some stop on ``boarding``, latest first."""
    return [boarding - dt.timedelta(days=k) for k in range(BOARDING_LAG_DAYS + 1)]


def check_station_code(code: str) -> None:
    """Telegraph codes are exactly three capital letters (``VNP``)."""
    if not STATION_CODE.match(code):
        raise InvalidInput(
            "A station code is exactly 3 capital letters (the telegraph code, e.g. VNP).",
            details={"field": "code", "value": code},
        )


def check_display_name(value: str, field: str, *, max_length: int = MAX_NAME_LENGTH) -> None:
    """Names are shown on tickets and pages: non-blank, bounded, no control characters."""
    if not value.strip():
        raise InvalidInput(f"{field} must not be blank.", details={"field": field})
    if len(value) > max_length:
        raise InvalidInput(f"{field} is longer than {max_length} characters.", details={"field": field})
    if any(unicodedata.category(ch).startswith("C") for ch in value):
        raise InvalidInput(f"{field} contains control characters.", details={"field": field})


def check_train_code(code: str, kind: str) -> None:
    """Codes look like G1, D2203, K528: the kind letter, then a number; the kind must match."""
    match = TRAIN_CODE.match(code)
    if match is None:
        raise InvalidInput(
            "A train code is a kind letter (G, D, C, K, T, Z, Y) followed by a number, e.g. G1 or K528.",
            details={"field": "code", "value": code},
        )
    if kind != match.group(1):
        raise InvalidInput(
            f"Train {code} is of kind {match.group(1)}, not {kind!r}.",
            details={"field": "kind", "value": kind},
        )


def stop_times(stops: tuple[StopSpec, ...] | list[StopSpec]) -> list[StopTimes]:
    """Absolute minutes (from midnight of the departure day) of every arrival and departure,
    checking that time never goes backwards along the train."""
    result: list[StopTimes] = []
    last = -1
    last_day = 0
    for index, stop in enumerate(stops):
        where = {"stop": index, "station": stop.station}
        if stop.day < 0 or stop.day > MAX_DAY_OFFSET:
            raise InvalidInput(
                f"Stop {index}: day must be between 0 and {MAX_DAY_OFFSET}.",
                details={**where, "field": "day"},
            )
        if stop.day < last_day:
            raise InvalidInput(f"Stop {index}: day goes backwards.", details={**where, "field": "day"})
        last_day = stop.day
        base = stop.day * MINUTES_PER_DAY
        arrives = None if stop.arrives is None else base + _clock_at(stop.arrives, where, "arrives")
        departs = None if stop.departs is None else base + _clock_at(stop.departs, where, "departs")
        if arrives is not None and departs is not None and departs < arrives:
            # Arriving before midnight and leaving after it: the departure is on the next day.
            if departs + MINUTES_PER_DAY - arrives > MAX_DWELL_ACROSS_MIDNIGHT:
                raise InvalidInput(
                    f"Stop {index}: departs before it arrives.", details={**where, "field": "departs"}
                )
            departs += MINUTES_PER_DAY
        first_time = arrives if arrives is not None else departs
        if first_time is not None and first_time <= last:
            raise InvalidInput(
                f"Stop {index}: times go backwards (reached no later than the previous stop).",
                details={**where, "field": "arrives" if arrives is not None else "departs"},
            )
        last = max(t for t in (arrives, departs, last) if t is not None)
        result.append(StopTimes(arrives, departs))
    return result


def _clock_at(value: str, where: dict[str, object], field: str) -> int:
    try:
        return clock_minutes(value)
    except InvalidInput as exc:
        raise InvalidInput(
            f"Stop {where['stop']}: {field} {value!r} is not a clock time HH:MM.",
            details={**where, "field": field},
        ) from exc


def validate_train(spec: TrainSpec) -> list[StopTimes]:
    """Every rule of a publishable train; returns the stop times. Raises InvalidInput otherwise."""
    check_train_code(spec.code, spec.kind)
    n = len(spec.stops)
    if n < MIN_STOPS or n > MAX_STOPS:
        raise InvalidInput(
            f"A train has {MIN_STOPS} to {MAX_STOPS} stops, not {n}.", details={"field": "stops", "count": n}
        )
    seen: dict[str, int] = {}
    for index, stop in enumerate(spec.stops):
        where = {"stop": index, "station": stop.station}
        check_display_name(stop.station, f"stops[{index}].station")
        if stop.station in seen:
            raise InvalidInput(
                f"Stop {index}: {stop.station} is already stop {seen[stop.station]}.",
                details={**where, "field": "station", "first": seen[stop.station]},
            )
        seen[stop.station] = index
        if index == 0 and stop.arrives is not None:
            raise InvalidInput("The first stop has no arrival time.", details={**where, "field": "arrives"})
        if index == n - 1 and stop.departs is not None:
            raise InvalidInput("The last stop has no departure time.", details={**where, "field": "departs"})
        if index > 0 and stop.arrives is None:
            raise InvalidInput(f"Stop {index}: arrival time missing.", details={**where, "field": "arrives"})
        if index < n - 1 and stop.departs is None:
            raise InvalidInput(
                f"Stop {index}: departure time missing.", details={**where, "field": "departs"}
            )
        if stop.km < 0:
            raise InvalidInput(f"Stop {index}: km must not be negative.", details={**where, "field": "km"})
        if index > 0 and stop.km <= spec.stops[index - 1].km:
            raise InvalidInput(
                f"Stop {index}: km must be greater than at the previous stop.",
                details={**where, "field": "km"},
            )
    times = stop_times(spec.stops)
    validate_carriages(spec.carriages)
    return times


def validate_carriages(carriages: tuple[CarriageSpec, ...] | list[CarriageSpec]) -> None:
    """Carriages are numbered 1..N, each of a known seat class with 1..MAX_ROWS rows."""
    n = len(carriages)
    if n < 1 or n > MAX_CARRIAGES:
        raise InvalidInput(
            f"A train has 1 to {MAX_CARRIAGES} carriages, not {n}.",
            details={"field": "carriages", "count": n},
        )
    numbers = set()
    for position, c in enumerate(carriages):
        where = {"carriage": c.carriage, "position": position}
        if c.carriage < 1 or c.carriage > n or c.carriage in numbers:
            raise InvalidInput(
                f"Carriages are numbered 1..{n} once each; {c.carriage} is not.",
                details={**where, "field": "carriage"},
            )
        numbers.add(c.carriage)
        if c.seat_class not in SEAT_CLASSES:
            raise InvalidInput(
                f"Carriage {c.carriage}: unknown seat class {c.seat_class!r}.",
                details={**where, "field": "seat_class", "known": list(SEAT_CLASSES)},
            )
        if c.rows < 1 or c.rows > MAX_ROWS:
            raise InvalidInput(
                f"Carriage {c.carriage}: rows must be 1..{MAX_ROWS}.", details={**where, "field": "rows"}
            )
