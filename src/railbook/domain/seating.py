"""Seat classes, their row layouts, and the value types the allocators exchange.

Stations of a train-day are indexed 0..n-1; segment k joins station k and k+1; a journey
i→j covers segments i..j-1 (bit mask ``((1 << (j - i)) - 1) << i``).
Seats of one seat class on a train-day are numbered 0..N-1 in (carriage, row, letter)
order; that number is the seat's identity for the allocators and for ``daily_seat.seat_index``.
"""

from __future__ import annotations

from dataclasses import dataclass

# Letters (or berth names) of one row, per seat class, in the order seats are numbered.
SEAT_LETTERS: dict[str, tuple[str, ...]] = {
    "business": ("A", "C", "F"),
    "first": ("A", "C", "D", "F"),
    "second": ("A", "B", "C", "D", "F"),
    # Sleepers: a "row" is a compartment; berths are named by level (lower/middle/upper).
    "soft_sleeper": ("1", "2", "3", "4"),  # 4 berths per soft-sleeper compartment
    "hard_sleeper": ("1", "2", "3", "4", "5", "6"),  # 6 berths per hard-sleeper bay
    "hard_seat": ("A", "B", "C", "D", "F"),
}
SEAT_CLASSES: tuple[str, ...] = tuple(SEAT_LETTERS)


def journey_mask(from_index: int, to_index: int) -> int:
    """Bit mask of the segments a journey from stop ``from_index`` to ``to_index`` covers."""
    return ((1 << (to_index - from_index)) - 1) << from_index


def seat_name(carriage: int, row: int, letter: str) -> str:
    """12306-style seat name: ``05-12F`` (carriage 5, row 12, seat F)."""
    return f"{carriage:02d}-{row:02d}{letter}"


@dataclass(frozen=True, slots=True)
class Seat:
    """One seat of one class on a train-day; ``index`` is its number within the class."""

    index: int
    carriage: int
    row: int
    letter: str

    @property
    def name(self) -> str:
        return seat_name(self.carriage, self.row, self.letter)


@dataclass(frozen=True, slots=True)
class CarriageSpec:
    carriage: int
    seat_class: str
    rows: int


def class_seats(carriages: list[CarriageSpec] | tuple[CarriageSpec, ...], seat_class: str) -> list[Seat]:
    """All seats of one class, numbered in (carriage, row, letter) order."""
    seats: list[Seat] = []
    letters = SEAT_LETTERS[seat_class]
    for c in sorted(carriages, key=lambda c: c.carriage):
        if c.seat_class != seat_class:
            continue
        for row in range(1, c.rows + 1):
            for letter in letters:
                seats.append(Seat(len(seats), c.carriage, row, letter))
    return seats


@dataclass(frozen=True, slots=True)
class PassengerSeatRequest:
    """One passenger's wish: a class, optionally a letter (``"A"``) or a seat name (``"05-12F"``)."""

    seat_class: str
    pref: str | None = None


@dataclass(frozen=True, slots=True)
class AllocationRequest:
    """One order's request: all passengers travel the same journey; all-or-nothing."""

    from_index: int
    to_index: int
    passengers: tuple[PassengerSeatRequest, ...]


@dataclass(frozen=True, slots=True)
class SeatAssignment:
    """The seat given to passenger number ``position`` of the request."""

    position: int
    seat_class: str
    seat_index: int
    seat_name: str
