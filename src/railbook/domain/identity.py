"""Identity rules of members and passengers: resident ID cards (GB 11643), mobiles, passwords, names.

Pure functions; every check raises ``InvalidInput`` naming the offending field, so the API layer
answers 422 ``VALIDATION_ERROR`` with that field in ``details``.
"""

from __future__ import annotations

import base64
import datetime as dt
import hmac
import re
import unicodedata

from railbook.domain.errors import InvalidInput

# GB 11643-1999: weights of the first 17 digits and the check character for (sum mod 11).
ID_CARD_WEIGHTS: tuple[int, ...] = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
ID_CARD_CHECK_CHARS = "10X98765432"
EARLIEST_BIRTH = dt.date(1900, 1, 1)

PASSWORD_MIN = 8
PASSWORD_MAX = 128
NAME_MAX = 64
PASSENGER_TYPES: tuple[str, ...] = ("adult", "child", "student", "disabled_military")
CHILD_AGE_LIMIT = 14  # a child ticket is for someone under 14 on the travel date

_MOBILE = re.compile(r"1[3-9][0-9]{9}")

# The three-digit prefixes (号段) assigned to mainland mobile numbers, by the numbering plan of the
# Ministry of Industry and Information Technology (carriers, their virtual operators and the
# broadcast network); a number outside these reaches no phone. 140–144 (data cards and IoT), 154,
# 160–161, 163–164, 168–169 and 179 are not assigned to personal mobiles.
MOBILE_PREFIXES: frozenset[str] = frozenset(
    [f"13{d}" for d in range(10)]  # 130–139
    + [f"14{d}" for d in range(5, 10)]  # 145–149
    + [f"15{d}" for d in (0, 1, 2, 3, 5, 6, 7, 8, 9)]  # 150–153, 155–159
    + ["162", "165", "166", "167"]
    + [f"17{d}" for d in range(9)]  # 170–178
    + [f"18{d}" for d in range(10)]  # 180–189
    + [f"19{d}" for d in range(10)]  # 190–199
)
_DIGITS17 = re.compile(r"[0-9]{17}")
# Separators that appear in real names: the middle dot of transliterated names, a dot, a hyphen.
_NAME_PUNCTUATION = frozenset("·•.-")


def _invalid(field: str, message: str) -> InvalidInput:
    return InvalidInput(message, details={"fields": [{"field": field, "message": message}]})


def id_card_check_char(first17: str) -> str:
    """The check character that completes 17 digits into a valid ID number."""
    if not _DIGITS17.fullmatch(first17):
        raise _invalid("id_card", "An ID number starts with 17 digits.")
    total = sum(int(d) * w for d, w in zip(first17, ID_CARD_WEIGHTS, strict=True))
    return ID_CARD_CHECK_CHARS[total % 11]


def compose_id_card(region: str, birth: dt.date, sequence: int) -> str:
    """A valid ID number from a 6-digit region, a birth date and a 3-digit sequence (demo data)."""
    first17 = f"{region}{birth:%Y%m%d}{sequence:03d}"
    return first17 + id_card_check_char(first17)


def validate_id_card(value: str, *, today: dt.date) -> str:
    """The normalised ID number (upper-case X) if it is well formed, has a real birth date (not after
    ``today``, the caller's Beijing day) and the right check character; otherwise ``InvalidInput`` on
    field ``id_card``."""
    if not isinstance(value, str) or len(value) != 18:
        raise _invalid("id_card", "An ID number has 18 characters.")
    number = value.upper()
    first17, check = number[:17], number[17]
    if not _DIGITS17.fullmatch(first17) or check not in "0123456789X":
        raise _invalid("id_card", "An ID number is 17 digits and a check digit (0-9 or X).")
    if first17[0] == "0":
        raise _invalid("id_card", "The ID number's region code is not valid.")
    try:
        birth = dt.date(int(first17[6:10]), int(first17[10:12]), int(first17[12:14]))
    except ValueError:
        raise _invalid("id_card", "The ID number's birth date is not a real date.") from None
    if birth < EARLIEST_BIRTH or birth > today:
        raise _invalid("id_card", "The ID number's birth date is out of range.")
    if id_card_check_char(first17) != check:
        raise _invalid("id_card", "The ID number's check digit does not match.")
    return number


# A traveller key is this many bytes of the HMAC (20 characters of base64url, no padding): 120 bits,
# no collision among any number of people a railway will ever list.
TRAVELLER_KEY_BYTES = 15


def traveller_key(secret: str, id_card: str) -> str:
    """The person behind an ID number, as a key that does not show the number: an HMAC-SHA256 of the
    normalised number (upper-case, no surrounding blanks) under the server's secret, truncated.
    Equal for every member's passenger record of that person (one person, one seat at a time is
    decided by the ID number, as 12306 does), stable while the secret is, and meaningless without it.
    The number is tagged, so the key is no other HMAC the same secret makes."""
    tag = hmac.digest(secret.encode(), b"traveller:" + id_card.strip().upper().encode(), "sha256")
    return base64.urlsafe_b64encode(tag[:TRAVELLER_KEY_BYTES]).decode()


def mask_id_card(value: str) -> str:
    """Show only the region and the last four characters: ``110101********123X``."""
    if len(value) <= 10:
        return "*" * len(value)
    return value[:6] + "*" * (len(value) - 10) + value[-4:]


def validate_mobile(value: str) -> str:
    """A mainland mobile number: 11 digits whose first three are an assigned prefix (``MOBILE_PREFIXES``)."""
    if not isinstance(value, str) or not _MOBILE.fullmatch(value):
        raise _invalid("mobile", "A mobile number is 11 digits starting with 13 to 19.")
    if value[:3] not in MOBILE_PREFIXES:
        raise _invalid("mobile", f"No mainland mobile number starts with {value[:3]}.")
    return value


def validate_password(value: str) -> str:
    """Length is the policy (8–128 characters); no control characters, which no keyboard types."""
    if not isinstance(value, str) or not PASSWORD_MIN <= len(value) <= PASSWORD_MAX:
        raise _invalid("password", f"A password has {PASSWORD_MIN} to {PASSWORD_MAX} characters.")
    if any(unicodedata.category(ch) in ("Cc", "Cf") for ch in value):
        raise _invalid("password", "A password cannot contain control characters.")
    return value


def validate_person_name(value: str, field: str = "name") -> str:
    """A person's name as printed on a ticket: letters (any script), inner spaces and the
    separators real names use (``·``, ``.``, ``-``); anything else is refused, not escaped."""
    if not isinstance(value, str):
        raise _invalid(field, "A name is text.")
    name = unicodedata.normalize("NFC", value).strip()
    if not 1 <= len(name) <= NAME_MAX:
        raise _invalid(field, f"A name has 1 to {NAME_MAX} characters.")
    for ch in name:
        if ch.isalpha() or ch == " " or ch in _NAME_PUNCTUATION:
            continue
        raise _invalid(field, "A name may contain only letters, spaces and · . -")
    if "  " in name or not name[0].isalpha():
        raise _invalid(field, "A name starts with a letter and has single spaces.")
    return name


def validate_passenger_type(value: str) -> str:
    """adult, child, student or disabled_military (the fare rules differ)."""
    if value not in PASSENGER_TYPES:
        raise _invalid("type", "The passenger type is adult, child, student or disabled_military.")
    return value


def birth_date(id_card: str) -> dt.date:
    """The birth date written in a (validated) ID number."""
    return dt.date(int(id_card[6:10]), int(id_card[10:12]), int(id_card[12:14]))


def age_on(id_card: str, day: dt.date) -> int:
    """Whole years of age on ``day`` of the holder of a (validated) ID number."""
    born = birth_date(id_card)
    return day.year - born.year - ((day.month, day.day) < (born.month, born.day))


def is_child_on(id_card: str, day: dt.date) -> bool:
    """Whether the holder may travel on a child ticket on ``day`` (under 14 that day)."""
    return age_on(id_card, day) < CHILD_AGE_LIMIT
