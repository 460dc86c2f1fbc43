"""What the order path needs of a passenger, in a compact text form the accept path caches.

A rider is the name printed on the ticket, the fare type and the birth date from the ID number (the
child fare's age check). Caches keep it as one line of text so a cached value is a plain string in
both modes; a value in an older form (a bare name) reads as unknown, so the cache is filled again.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from railbook.domain.errors import NotAChild
from railbook.domain.identity import CHILD_AGE_LIMIT, birth_date

_PREFIX = "r1|"


@dataclass(frozen=True, slots=True)
class Rider:
    name: str
    fare_type: str = "adult"
    born: dt.date | None = None

    @classmethod
    def of(cls, name: str, fare_type: str, id_card: str) -> Rider:
        """The rider of a passenger record (the birth date read from the ID number when it has one)."""
        try:
            born: dt.date | None = birth_date(id_card)
        except (ValueError, IndexError):
            born = None
        return cls(name, fare_type or "adult", born)

    def text(self) -> str:
        """The cached form: ``r1|<type>|<birth date or ->|<name>``."""
        return f"{_PREFIX}{self.fare_type}|{self.born.isoformat() if self.born else '-'}|{self.name}"

    @classmethod
    def parse(cls, text: str) -> Rider | None:
        """The rider of a cached text; None for a text in another form."""
        if not text.startswith(_PREFIX):
            return None
        parts = text[len(_PREFIX) :].split("|", 2)
        if len(parts) != 3:
            return None
        fare_type, born, name = parts
        try:
            day = None if born == "-" else dt.date.fromisoformat(born)
        except ValueError:
            return None
        return cls(name, fare_type, day)

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
