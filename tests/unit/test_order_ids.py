"""Order ids: uuid7 strings, tagged for their member, carrying their service date under the tag."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from railbook.services.booking.order_ids import issue_order_id, order_id_date, verify_order_id

SECRET = "s" * 40


@pytest.mark.parametrize("date", [dt.date(2026, 12, 5), dt.date(2000, 1, 1), dt.date(2099, 12, 31)])
def test_a_dated_id_is_a_uuid7_of_its_member_and_carries_its_date(date: dt.date) -> None:
    order_id = issue_order_id(SECRET, 42, date)
    parsed = uuid.UUID(order_id)
    assert parsed.version == 7 and parsed.variant == uuid.RFC_4122 and str(parsed) == order_id
    assert order_id_date(order_id) == date
    assert verify_order_id(SECRET, 42, order_id)
    assert not verify_order_id(SECRET, 43, order_id)


def test_the_date_is_under_the_tag() -> None:
    raw = bytearray(uuid.UUID(issue_order_id(SECRET, 42, dt.date(2026, 12, 5))).bytes)
    raw[11] ^= 1  # another day
    forged = str(uuid.UUID(bytes=bytes(raw)))
    assert order_id_date(forged) == dt.date(2026, 12, 4)
    assert not verify_order_id(SECRET, 42, forged)


def test_ids_of_one_process_are_distinct_and_in_order_within_a_millisecond() -> None:
    ids = [issue_order_id(SECRET, 7, dt.date(2026, 12, 5)) for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)


def test_ids_issued_without_a_date_stay_valid_and_carry_none_or_a_mere_hint() -> None:
    order_id = issue_order_id(SECRET, 42)
    assert verify_order_id(SECRET, 42, order_id)
    assert order_id_date("not an id") is None
    assert order_id_date(str(uuid.uuid4())) is None  # not a uuid7
