"""A search as asked: the query and the checks of its parts (each a 422 naming the field)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from railbook.domain.errors import InvalidInput
from railbook.domain.timetable import TRAIN_KINDS, check_display_name, clock_minutes

# A station as typed (name, telegraph code, city, or a pinyin prefix): at most this many characters
# after stripping, the bound /openapi.json states. Longer than any name is no error of form: an
# unknown station is 404 STATION_NOT_FOUND, a prefix that matches nothing an empty list (API.md).
TERM_MAX_LENGTH = 64


@dataclass(frozen=True, slots=True)
class SearchQuery:
    from_term: str
    to_term: str
    date: dt.date
    kinds: frozenset[str] = frozenset()
    depart_after: int | None = None  # minutes after midnight
    depart_before: int | None = None


def parse_kinds(value: str | None) -> frozenset[str]:
    """``G,D`` → {"G", "D"}; 422 for anything but train kind letters."""
    if not value:
        return frozenset()
    kinds = frozenset(k.strip().upper() for k in value.split(",") if k.strip())
    unknown = sorted(kinds - set(TRAIN_KINDS))
    if unknown or not kinds:
        raise InvalidInput(
            "kind is a comma-separated list of train kinds (G, D, C, K, T, Z, Y).",
            details={"field": "kind", "unknown": unknown, "known": list(TRAIN_KINDS)},
        )
    return kinds


def parse_clock(value: str | None, field_name: str) -> int | None:
    """``HH:MM`` → minutes after midnight; 422 naming the field otherwise."""
    if value is None:
        return None
    try:
        return clock_minutes(value)
    except InvalidInput as exc:
        raise InvalidInput(
            f"{field_name} must be a clock time HH:MM.", details={"field": field_name, "value": value[:16]}
        ) from exc


def check_term(value: str, field_name: str) -> str:
    """A station term as typed: bounded, printable; 422 otherwise (before any store is asked)."""
    term = value.strip()
    check_display_name(term, field_name, max_length=TERM_MAX_LENGTH)
    return term
