"""Each pattern /openapi.json states accepts what the domain check it states accepts: the same texts
(within the schema's length bounds), or, where the check does more than a pattern can, never one the
check accepts. Texts are drawn without the characters the patterns leave unstated (format,
private-use, unassigned; see ``api.input_patterns``)."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable

from hypothesis import given
from hypothesis import strategies as st

from railbook.api import input_patterns as p
from railbook.domain.errors import InvalidInput
from railbook.domain.identity import (
    compose_id_card,
    validate_id_card,
    validate_mobile,
    validate_password,
    validate_person_name,
)
from railbook.domain.timetable import check_display_name, clock_minutes
from railbook.services.search.query import TERM_MAX_LENGTH, check_term, parse_kinds

STATED_CHARACTERS = st.characters(exclude_categories=("Cf", "Co", "Cn", "Cs"))
# The characters the rules turn on, often enough to meet each other.
EDGES = st.sampled_from([*" \t\n\x1f\x85\u3000,:.-·0189GgDdXx张", "", "13", "G,", "12:", "\x7f"])


def texts(max_size: int) -> st.SearchStrategy[str]:
    return (
        st.lists(EDGES | STATED_CHARACTERS, max_size=max_size)
        .map("".join)
        .filter(lambda s: len(s) <= max_size)
    )


def accepts(check: Callable[[str], object], value: str) -> bool:
    try:
        check(value)
    except InvalidInput:
        return False
    return True


def matches(pattern: str, value: str) -> bool:
    """Whether ``value`` matches ``pattern`` as JSON Schema reads it: a final ``$`` ends the text."""
    python = pattern[:-1] + r"\Z" if pattern.endswith("$") else pattern
    return re.search(python, value) is not None


@given(texts(TERM_MAX_LENGTH))
def test_station_terms(value: str) -> None:
    assert matches(p.STRIPPED_TERM, value) == accepts(lambda v: check_term(v, "from"), value)
    prefix_accepted = not value.strip() or accepts(lambda v: check_term(v, "q"), value)
    assert matches(p.STRIPPED_PREFIX, value) == prefix_accepted


@given(texts(32))
def test_display_names(value: str) -> None:
    assert matches(p.NON_BLANK, value) == accepts(lambda v: check_display_name(v, "name"), value)
    optional = value == "" or accepts(lambda v: check_display_name(v, "city"), value)
    assert matches(p.EMPTY_OR_NON_BLANK, value) == optional


@given(texts(32))
def test_train_kinds(value: str) -> None:
    assert matches(p.TRAIN_KINDS_LIST, value) == accepts(parse_kinds, value)


@given(texts(5) | st.from_regex(p.CLOCK_PATTERN, fullmatch=True))
def test_clock_times(value: str) -> None:
    if len(value) <= 5:
        assert matches(p.CLOCK_PATTERN, value) == accepts(clock_minutes, value)


@given(texts(11) | st.from_regex(r"1[0-9]{10}", fullmatch=True))
def test_mobiles(value: str) -> None:
    assert matches(p.MOBILE, value) == accepts(validate_mobile, value)


@given(texts(128) | st.text(STATED_CHARACTERS, min_size=6, max_size=10))
def test_passwords(value: str) -> None:
    stated = matches(p.PRINTABLE, value) and len(value) >= 8
    assert stated == accepts(validate_password, value)


@given(texts(128))
def test_person_names_are_never_refused_by_the_pattern_when_accepted(value: str) -> None:
    if accepts(validate_person_name, value):
        assert matches(p.PERSON_NAME, value)


def test_a_person_name_too_long_after_stripping_is_refused_by_the_pattern() -> None:
    assert matches(p.PERSON_NAME, "  " + "张" * 64 + "  ")
    assert not matches(p.PERSON_NAME, "张" * 65)
    assert not matches(p.PERSON_NAME, "   ")


@given(
    st.dates(dt.date(1900, 1, 1), dt.date(2026, 1, 1)),
    st.integers(0, 999),
    st.sampled_from(["110105", "310101", "440300"]),
)
def test_id_cards_accepted_match_the_pattern(birth: dt.date, sequence: int, region: str) -> None:
    card = compose_id_card(region, birth, sequence)
    assert accepts(lambda v: validate_id_card(v, today=dt.date(2026, 12, 1)), card)
    assert matches(p.ID_CARD, card) and matches(p.ID_CARD, card.lower())


@given(texts(18))
def test_id_cards_the_pattern_refuses_are_refused(value: str) -> None:
    if not matches(p.ID_CARD, value):
        assert not accepts(lambda v: validate_id_card(v, today=dt.date(2026, 12, 1)), value)
