"""When a journey may still be sold, and when two journeys of one person collide (12306 rules).

Online sale of a journey stops a fixed number of minutes before the train leaves the passenger's
boarding station. A person holds one seat at a time: a journey occupies the passenger from the
departure at ``from`` to the arrival at ``to``, in absolute time, and two journeys of the same person
may not overlap; nor may one person hold two journeys on the same train-day at all.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass


def sale_closes_at(departs_at: dt.datetime, cutoff_minutes: int) -> dt.datetime:
    """The moment online sale of a journey leaving at ``departs_at`` stops."""
    return departs_at - dt.timedelta(minutes=cutoff_minutes)


def sale_closed(departs_at: dt.datetime, now: dt.datetime, cutoff_minutes: int) -> bool:
    """Whether sale has closed at ``now`` for a journey whose train leaves the boarding station at
    ``departs_at``: it has left, or leaves within ``cutoff_minutes``. Both times are aware."""
    return now >= sale_closes_at(departs_at, cutoff_minutes)


@dataclass(frozen=True, slots=True)
class Trip:
    """A journey a person holds: the train-day it is on and the seconds (Unix time) it occupies."""

    train_day: str
    starts: int
    ends: int

    def collides(self, other: Trip) -> bool:
        """The same train-day, or times that overlap (a journey ending as the other starts does not)."""
        return self.train_day == other.train_day or (self.starts < other.ends and other.starts < self.ends)


def train_day_name(train_code: str, service_date: dt.date | str) -> str:
    """The name a trip gives its train-day (the train's code and the day it leaves its origin)."""
    return f"{train_code}:{service_date}"
