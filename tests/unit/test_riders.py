"""domain/riders.py: the compact rider text the order path caches (with the traveller key of the
person), and the child fare's age check."""

from __future__ import annotations

import datetime as dt

import pytest

from railbook.domain.errors import NotAChild
from railbook.domain.identity import compose_id_card, traveller_key
from railbook.domain.riders import Rider

BORN = dt.date(2020, 6, 15)
SECRET = "a-secret"
KEY = "AbCdEfGhIjKlMnOpQr-_"


def test_a_rider_reads_its_birth_date_and_traveller_key_from_the_id_number() -> None:
    card = compose_id_card("110101", BORN, 12)
    assert Rider.of("王小明", "child", card, SECRET) == Rider(
        "王小明", "child", BORN, traveller_key(SECRET, card)
    )


def test_a_rider_without_a_readable_id_number_has_no_birth_date() -> None:
    assert Rider.of("王小明", "adult", "", SECRET).born is None
    assert Rider.of("王小明", "", "not-a-card", SECRET) == Rider(
        "王小明", "adult", None, traveller_key(SECRET, "not-a-card")
    )


@pytest.mark.parametrize(
    "rider",
    [
        Rider("王小明", "child", BORN, KEY),
        Rider("李四", "adult", None, KEY),
        Rider("名字|带竖线", "student", dt.date(2001, 1, 31), KEY),  # the name is the last field: kept whole
    ],
)
def test_the_text_form_reads_back_as_the_same_rider(rider: Rider) -> None:
    text = rider.text()
    assert text.startswith("r2|")
    assert Rider.parse(text) == rider


@pytest.mark.parametrize(
    "text",
    [
        "王小明",
        "",
        "r1|adult",
        "r1|adult|2020-13-01|x",
        "r1|adult|-|王小明",  # the form before traveller keys: read again from the database
        "r2|adult|-|x",
        "r2|adult|-||王小明",  # no traveller key
        "r2|adult|2020-13-01|" + KEY + "|x",
    ],
)
def test_a_text_in_another_form_reads_as_unknown(text: str) -> None:
    assert Rider.parse(text) is None


@pytest.mark.parametrize("fare_type", ["adult", "student", "disabled_military"])
def test_fare_types_other_than_child_need_no_age(fare_type: str) -> None:
    assert Rider("张三", fare_type, None).fare_type_on(dt.date(2030, 1, 1)) == fare_type


def test_a_child_fare_until_the_day_before_the_14th_birthday() -> None:
    child = Rider("王小明", "child", BORN)
    assert child.fare_type_on(dt.date(2034, 6, 14)) == "child"
    with pytest.raises(NotAChild) as refused:
        child.fare_type_on(dt.date(2034, 6, 15))  # 14 that day
    assert refused.value.details == {"travel_date": "2034-06-15"}
    with pytest.raises(NotAChild):
        child.fare_type_on(dt.date(2040, 1, 1))


def test_a_child_fare_with_no_known_age_is_refused() -> None:
    with pytest.raises(NotAChild):
        Rider("王小明", "child", None).fare_type_on(dt.date(2030, 1, 1))


def test_a_birthday_on_29_february() -> None:
    leap = Rider("王小明", "child", dt.date(2016, 2, 29))
    assert leap.fare_type_on(dt.date(2030, 2, 28)) == "child"
    with pytest.raises(NotAChild):
        leap.fare_type_on(dt.date(2030, 3, 1))
