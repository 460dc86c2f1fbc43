"""What the order path needs of a passenger, in a compact text form the accept path caches.

A rider is the name printed on the ticket, the fare type, the birth date from the ID number (the
child fare's age check) and the traveller key (``identity.traveller_key``: the person, by ID number,
whose trips are checked). Caches keep it as one line of text so a cached value is a plain string in
both modes; a value in an older form (a bare name, or ``r1|`` without the traveller key) reads as
unknown, so the cache is filled again from the database.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from railbook.domain.errors import NotAChild
from railbook.domain.identity import CHILD_AGE_LIMIT, birth_date, traveller_key

_PREFIX = "r2|"


@dataclass(frozen=True, slots=True)
class Rider:
    name: str
    fare_type: str = "adult"
    born: dt.date | None = None
    traveller: str = ""  # the traveller key ("" only for a rider made without its record)

    @classmethod
    def of(cls, name: str, fare_type: str, id_card: str, secret: str) -> Rider:
        """The rider of a passenger record (the birth date read from the ID number when it has one,
        the traveller key made from it under ``secret``)."""
        try:
            born: dt.date | None = birth_date(id_card)
        except (ValueError, IndexError):
            born = None
        return cls(name, fare_type or "adult", born, traveller_key(secret, id_card))

    def text(self) -> str:
        """The cached form: ``r2|<type>|<birth date or ->|<traveller key>|<name>``."""
        born = self.born.isoformat() if self.born else "-"
        return f"{_PREFIX}{self.fare_type}|{born}|{self.traveller}|{self.name}"

    @classmethod
    def parse(cls, text: str) -> Rider | None:
        """The rider of a cached text; None for a text in another form (or without a traveller key)."""
        if not text.startswith(_PREFIX):
            return None
        parts = text[len(_PREFIX) :].split("|", 3)
        if len(parts) != 4:
            return None
        fare_type, born, traveller, name = parts
        if not traveller:
            return None
        try:
            day = None if born == "-" else dt.date.fromisoformat(born)
        except ValueError:
            return None
        return cls(name, fare_type, day, traveller)

    def fare_type_on(self, travel_date: dt.date) -> str:
        """The fare type this rider travels on that day: NOT_A_CHILD for a child fare of someone 14 or
        older then (or whose age is unknown)."""
        if self.fare_type == "child" and not _under_14(self.born, travel_date):
            raise NotAChild(
                f"{self.name} is not under 14 on {travel_date}: a child fare is not possible.",
                details={"travel_date": travel_date.isoformat()},
            )
        return self.fare_type


def _under_14(born: dt.date | None, day: dt.date) -> bool:
    """``identity.is_child_on`` from the birth date the rider keeps (not the whole ID number)."""
    if born is None:
        return False
    years = day.year - born.year - ((day.month, day.day) < (born.month, born.day))
    return years < CHILD_AGE_LIMIT
