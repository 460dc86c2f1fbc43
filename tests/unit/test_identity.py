"""Identity rules: GB 11643 ID numbers, masking, traveller keys, mobiles, passwords, names."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from railbook.domain.errors import InvalidInput
from railbook.domain.identity import (
    age_on,
    compose_id_card,
    id_card_check_char,
    is_child_on,
    mask_id_card,
    traveller_key,
    validate_id_card,
    validate_mobile,
    validate_passenger_type,
    validate_password,
    validate_person_name,
)

TODAY = dt.date(2026, 11, 26)


@pytest.mark.parametrize(
    ("first17", "check"),
    [
        ("11010519491231002", "X"),  # the standard's own example
        ("44052418800101001", "4"),  # a widely published example (born 1880: checksum only)
        ("44030819800101001", "2"),  # worked by hand: weighted sum 186, 186 mod 11 = 10 -> "2"
    ],
)
def test_check_char_examples(first17: str, check: str) -> None:
    assert id_card_check_char(first17) == check


def test_valid_numbers_pass() -> None:
    assert validate_id_card("11010519491231002X", today=TODAY) == "11010519491231002X"
    assert validate_id_card("440308198001010012", today=TODAY) == "440308198001010012"


def test_lower_case_x_is_accepted_and_normalised() -> None:
    assert validate_id_card("11010519491231002x", today=TODAY) == "11010519491231002X"


@pytest.mark.parametrize(
    "bad",
    [
        "11010519491231002",  # 17 characters
        "11010519491231002XX",  # 19
        "11010519491231002Y",  # bad check character
        "1101051949123100AX",  # letter among the digits
        "11010519491231003X",  # wrong check digit
        "01010519491231002X",  # region cannot start with 0
        "440524188001010014",  # right check digit, but born before 1900
        "",
    ],
)
def test_malformed_numbers_fail(bad: str) -> None:
    with pytest.raises(InvalidInput) as info:
        validate_id_card(bad, today=TODAY)
    assert info.value.details["fields"][0]["field"] == "id_card"


@pytest.mark.parametrize(
    "birth",
    ["19490230", "20230229", "19901301", "19900100", "18991231", "20261127", "30000101"],
)
def test_impossible_or_future_birth_dates_fail(birth: str) -> None:
    first17 = "110105" + birth + "002"
    number = first17 + id_card_check_char(first17)  # a correct check digit, so only the date is wrong
    with pytest.raises(InvalidInput, match="birth date"):
        validate_id_card(number, today=TODAY)


def test_leap_day_and_today_are_real_birth_dates() -> None:
    assert validate_id_card(compose_id_card("110105", dt.date(2024, 2, 29), 7), today=TODAY)
    assert validate_id_card(compose_id_card("110105", TODAY, 7), today=TODAY)


def test_compose_builds_valid_numbers() -> None:
    number = compose_id_card("110101", dt.date(1988, 3, 7), 123)
    assert number.startswith("11010119880307123")
    assert validate_id_card(number, today=TODAY) == number


def test_masking_keeps_region_and_last_four() -> None:
    assert mask_id_card("11010519491231002X") == "110105********002X"
    assert mask_id_card("110101199003071234") == "110101********1234"
    assert mask_id_card("12345") == "*****"


_birth_dates = st.dates(min_value=dt.date(1900, 1, 1), max_value=TODAY)


@given(
    region=st.integers(100000, 999999),
    birth=_birth_dates,
    sequence=st.integers(0, 999),
    other=st.sampled_from("0123456789X"),
)
def test_computed_check_digit_validates_and_any_other_fails(
    region: int, birth: dt.date, sequence: int, other: str
) -> None:
    first17 = f"{region}{birth:%Y%m%d}{sequence:03d}"
    good = id_card_check_char(first17)
    assert validate_id_card(first17 + good, today=TODAY) == first17 + good
    if other != good:
        with pytest.raises(InvalidInput, match="check digit"):
            validate_id_card(first17 + other, today=TODAY)


@given(digits=st.text(alphabet="0123456789", min_size=17, max_size=17), last=st.characters())
def test_any_17_digits_with_a_wrong_last_char_fail(digits: str, last: str) -> None:
    if last.upper() == id_card_check_char(digits):
        return
    with pytest.raises(InvalidInput):
        validate_id_card(digits + last, today=TODAY)


@pytest.mark.parametrize(
    "good", ["13800000000", "19912345678", "14512345678", "16212345678", "17812345678", "15012345678"]
)
def test_mobiles_accepted(good: str) -> None:
    assert validate_mobile(good) == good


@pytest.mark.parametrize(
    "bad",
    [
        "1380000000",
        "138000000000",
        "23800000000",
        "1380000000a",
        " 13800000000",
        "",
        "10000000000",
        "12345678901",
        "14012345678",
        "15412345678",
        "16012345678",
        "16812345678",
        "17912345678",
    ],
)
def test_mobiles_refused(bad: str) -> None:
    with pytest.raises(InvalidInput):
        validate_mobile(bad)


def test_password_policy() -> None:
    assert validate_password("x" * 8)
    assert validate_password("密" * 128)
    for bad in ("x" * 7, "x" * 129, "abc\x00defgh", "abcdefgh\n"):
        with pytest.raises(InvalidInput):
            validate_password(bad)


@pytest.mark.parametrize("good", ["张三", "阿依古丽·买买提", "Anna Smith", "Jean-Luc", " 李四 "])
def test_names_accepted(good: str) -> None:
    assert validate_person_name(good) == good.strip()


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "   ",
        "Robert'); DROP TABLE member;--",
        "<script>",
        "a\tb",
        "张\x00三",
        "1 OR 1=1",
        "x" * 65,
        "A  B",
    ],
)
def test_names_refused(bad: str) -> None:
    with pytest.raises(InvalidInput):
        validate_person_name(bad)


def test_passenger_types() -> None:
    assert [validate_passenger_type(t) for t in ("adult", "child", "student")]
    with pytest.raises(InvalidInput):
        validate_passenger_type("senior")


def test_child_is_under_fourteen_on_the_travel_date() -> None:
    card = compose_id_card("110101", dt.date(2012, 12, 10), 1)
    assert age_on(card, dt.date(2026, 12, 9)) == 13
    assert is_child_on(card, dt.date(2026, 12, 9))
    assert age_on(card, dt.date(2026, 12, 10)) == 14  # the 14th birthday: no longer a child
    assert not is_child_on(card, dt.date(2026, 12, 10))


def test_a_traveller_key_is_the_person_under_the_secret() -> None:
    """One key per ID number whoever lists it (stable, whatever the case of the check character),
    another under another secret; the number itself is not in it."""
    card = compose_id_card("110101", dt.date(1988, 3, 7), 123)
    cards = (compose_id_card("110101", dt.date(1990, 1, 1), n) for n in range(1000))
    x_card = next(c for c in cards if c.endswith("X"))
    key = traveller_key("secret-a", card)
    assert key == traveller_key("secret-a", card)
    assert traveller_key("secret-a", x_card) == traveller_key("secret-a", x_card.lower())
    assert traveller_key("secret-a", x_card) == traveller_key("secret-a", f" {x_card} ")
    assert key != traveller_key("secret-b", card)
    assert key != traveller_key("secret-a", x_card)
    assert len(key) == 20 and "|" not in key and " " not in key
    assert card not in key and card[6:14] not in key
