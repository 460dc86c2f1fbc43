"""services/booking/trips.py: what a clash between two trips of one person makes of an order, from
the guard's own data when it decides, else from the system of record."""

from __future__ import annotations

import pytest

from railbook.domain.sale import Trip
from railbook.services.booking.trip_ports import TripClash
from railbook.services.booking.trips import (
    CONFLICT,
    DUPLICATE,
    RECENT_CLAIM_SECONDS,
    STALE,
    verdict_at_hand,
    verdict_from_records,
)

NOW = 1_900_000_000
MEMBER, PASSENGER, ORDER = 7, 70, "new-order"
OTHER_MEMBER, OTHER_PASSENGER = 8, 80  # another member's record of the same person
TRIP = Trip("G1:2030-05-01", NOW + 3600, NOW + 7200)
FRESH, OLD = NOW - 5, NOW - RECENT_CLAIM_SECONDS - 1


def _clash(train_day: str, claimed_at: int, order_id: str = "held-order") -> TripClash:
    return TripClash(PASSENGER, order_id, MEMBER, train_day, claimed_at, PASSENGER, "traveller-key")


SAME_DAY, OTHER_DAY = "G1:2030-05-01", "G3:2030-05-01"


@pytest.mark.parametrize(
    ("train_day", "claimed_at", "markers", "verdict"),
    [
        # Another train-day: a fresh trip is live whatever the markers; an older one asks the records.
        (OTHER_DAY, FRESH, None, CONFLICT),
        (OTHER_DAY, OLD, None, None),
        (OTHER_DAY, 0, None, None),  # restored from the records: no age to go by
        # This train-day: another order holding the marker is pending or unpaid.
        (SAME_DAY, OLD, {PASSENGER: "held-order"}, DUPLICATE),
        (SAME_DAY, FRESH, {PASSENGER: "another"}, DUPLICATE),
        # No marker but this order's own (admitted first, under an idempotency key): paid, or in flight
        # before its admission when fresh; the records tell an older one.
        (SAME_DAY, FRESH, {}, CONFLICT),
        (SAME_DAY, FRESH, {PASSENGER: ORDER}, CONFLICT),
        (SAME_DAY, OLD, {}, None),
        # Markers not trusted: unpaid or paid is for the records to say, fresh or not.
        (SAME_DAY, FRESH, None, None),
        (SAME_DAY, OLD, None, None),
    ],
)
def test_the_data_at_hand(
    train_day: str, claimed_at: int, markers: dict[int, str] | None, verdict: str | None
) -> None:
    assert verdict_at_hand(_clash(train_day, claimed_at), ORDER, MEMBER, TRIP, NOW, markers) == verdict


@pytest.mark.parametrize(
    ("train_day", "state", "in_flight", "verdict"),
    [
        (OTHER_DAY, ("SUCCESS", "UNPAID"), False, CONFLICT),
        (OTHER_DAY, ("SUCCESS", "PAID"), False, CONFLICT),
        (SAME_DAY, ("SUCCESS", "UNPAID"), False, DUPLICATE),
        (SAME_DAY, ("SUCCESS", "PAID"), False, CONFLICT),
        # Committed, but nothing held for this passenger: cancelled, expired, failed, refunded, changed.
        (OTHER_DAY, ("CANCEL", None), False, STALE),
        (SAME_DAY, ("SUCCESS", None), False, STALE),
        # Not committed: in flight (pending) or gone.
        (OTHER_DAY, None, True, CONFLICT),
        (SAME_DAY, None, True, DUPLICATE),
        (OTHER_DAY, None, False, STALE),
    ],
)
def test_the_records(
    train_day: str, state: tuple[str, str | None] | None, in_flight: bool, verdict: str
) -> None:
    assert verdict_from_records(_clash(train_day, OLD), MEMBER, TRIP, state, in_flight) == verdict


@pytest.mark.parametrize("markers", [None, {}, {PASSENGER: "held-order"}, {OTHER_PASSENGER: "held-order"}])
def test_another_member_s_trip_of_the_person_is_no_duplicate(markers: dict[int, str] | None) -> None:
    """Another member lists the same person (another passenger record): on this train-day their order
    is a conflict whatever this member's markers say; an older one asks the records."""
    fresh = TripClash(PASSENGER, "held-order", OTHER_MEMBER, SAME_DAY, FRESH, OTHER_PASSENGER, "k")
    assert verdict_at_hand(fresh, ORDER, MEMBER, TRIP, NOW, markers) == CONFLICT
    old = TripClash(PASSENGER, "held-order", OTHER_MEMBER, SAME_DAY, OLD, OTHER_PASSENGER, "k")
    assert verdict_at_hand(old, ORDER, MEMBER, TRIP, NOW, markers) is None
    assert verdict_from_records(old, MEMBER, TRIP, ("SUCCESS", "UNPAID"), False) == CONFLICT


def test_the_holder_s_marker_is_the_one_read() -> None:
    """The same member, a passenger record it deleted and listed again: the holding order's marker
    is under the holder's passenger id."""
    clash = TripClash(PASSENGER, "held-order", MEMBER, SAME_DAY, OLD, OTHER_PASSENGER, "k")
    assert verdict_at_hand(clash, ORDER, MEMBER, TRIP, NOW, {OTHER_PASSENGER: "held-order"}) == DUPLICATE
    assert verdict_at_hand(clash, ORDER, MEMBER, TRIP, NOW, {PASSENGER: "held-order"}) is None
