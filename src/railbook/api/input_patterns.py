"""The input rules of the domain that a JSON Schema can state, as ``pattern`` texts for /openapi.json.

The domain checks these rules itself, with its own messages; the schemas carry them only in the
document (``json_schema_extra``), so a client or fuzzer knows what will be accepted while the answers
stay the domain's. Each pattern accepts exactly what its check accepts, within these limits (stated
nowhere; ``tests/unit/test_input_patterns.py`` holds each to its check):

- "printable" here means no C0/C1 control character (Unicode category ``Cc``); the domain also
  refuses format characters, private-use and unassigned code points (``Cf``, ``Co``, ``Cn``:
  hundreds of ranges that change with each Unicode version), and the guard refuses NUL and lone
  surrogates everywhere;
- a pattern's ``$`` is the end of the text (ECMA-262's reading; Python's ``$`` also matches before
  a final newline, where ``\\Z`` is meant).
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import groupby
from typing import Any

from railbook.domain.identity import MOBILE_PREFIXES
from railbook.domain.timetable import CLOCK, TRAIN_CODE, TRAIN_KINDS


def stated(**keywords: Any) -> Callable[[dict[str, Any]], None]:
    """A ``json_schema_extra`` adding JSON Schema ``keywords`` to a text field's schema (to its text
    branch when the field may be null), without checking them: the domain does, with its messages."""

    def extra(schema: dict[str, Any]) -> None:
        for branch in schema.get("anyOf", [schema]):
            if branch.get("type") == "string":
                branch.update(keywords)

    return extra


_CONTROL = r"\x00-\x1f\x7f-\x9f"
# Blanks as ``str.strip`` sees them (``str.isspace``), spelled out: ``\s`` reads differently in
# ECMA-262, in Python's ``re`` and in its ASCII mode (which schemathesis uses).
_BLANKS = r"\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_BLANK = rf"[{_BLANKS}]"
_PRINTABLE = rf"[^{_CONTROL}]"
_VISIBLE = rf"[^{_BLANKS}{_CONTROL}]"  # printable and not blank

PRINTABLE = rf"^{_PRINTABLE}*$"
"""Text without control characters (empty included)."""

NON_BLANK = rf"^{_PRINTABLE}*{_VISIBLE}{_PRINTABLE}*$"
"""Printable text with something besides blanks (``check_display_name``)."""

EMPTY_OR_NON_BLANK = rf"^(?:{_PRINTABLE}*{_VISIBLE}{_PRINTABLE}*)?$"
"""An optional name: empty (not given), else as ``NON_BLANK``."""

STRIPPED_TERM = rf"^{_BLANK}*{_VISIBLE}(?:{_PRINTABLE}*{_VISIBLE})?{_BLANK}*$"
"""A term checked after stripping blanks (``check_term``): blanks around printable, non-blank text."""

STRIPPED_PREFIX = rf"^{_BLANK}*(?:{_VISIBLE}(?:{_PRINTABLE}*{_VISIBLE})?)?{_BLANK}*$"
"""As ``STRIPPED_TERM``, or only blanks (a station prefix: nothing typed yet)."""


PERSON_NAME = rf"^{_BLANK}*[^{_BLANKS}](?:.{{0,62}}[^{_BLANKS}])?{_BLANK}*$"
"""A person's name (``validate_person_name``): blanks around 1 to 64 characters. That these are
letters, single spaces and ``·•.-`` (letters of any script: no class of ECMA-262 without the ``u``
flag, nor of Python's ``re``, names them) is not stated; nor that the count is taken after Unicode
normalisation (NFC), which can only shorten text of combining marks."""


def _mobile() -> str:
    """The assigned prefixes, grouped by their first two digits: ``1(?:3[0123456789]|4[56789]|…)``."""
    groups = groupby(sorted(MOBILE_PREFIXES), key=lambda p: p[:2])
    alternatives = "|".join(f"{two[1]}[{''.join(p[2] for p in ps)}]" for two, ps in groups)
    return rf"^1(?:{alternatives})[0-9]{{8}}$"


MOBILE = _mobile()
"""A mainland mobile number (``validate_mobile``): an assigned three-digit prefix, then 8 digits."""

ID_CARD = r"^[1-9][0-9]{5}(?:19|20)[0-9]{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01])[0-9]{3}[0-9Xx]$"
"""A resident ID number's form (``validate_id_card``): region, birth date from 1900, sequence, check
character. That the date is real and not in the future, and the check character, are not stated."""

TRAIN_CODE_PATTERN = TRAIN_CODE.pattern
"""A train code as published: its kind letter and a number (``check_train_code``)."""

_KIND = "[" + "".join(TRAIN_KINDS) + "".join(TRAIN_KINDS).lower() + "]"
TRAIN_KINDS_LIST = rf"^(?:[{_BLANKS},]*{_KIND}(?:{_BLANK}*,[{_BLANKS},]*{_KIND})*[{_BLANKS},]*)?$"
"""Train kinds separated by commas, any case, blanks and empty items ignored (``parse_kinds``)."""

CLOCK_PATTERN = CLOCK.pattern
"""A clock time ``HH:MM`` (``clock_minutes``)."""
