"""When online sale of a journey closes: a few minutes before the train leaves the boarding station
(12306 stops selling a journey shortly before departure; the counter and the train staff take over).
Clock times of the timetable are Beijing time; ``departs_at`` comes from ``fees.departure_at``."""

from __future__ import annotations

import datetime as dt


def sale_closes_at(departs_at: dt.datetime, cutoff_minutes: int) -> dt.datetime:
    """The moment online sale of a journey leaving at ``departs_at`` stops."""
    return departs_at - dt.timedelta(minutes=cutoff_minutes)


def sale_closed(departs_at: dt.datetime, now: dt.datetime, cutoff_minutes: int) -> bool:
    """Whether sale has closed at ``now`` for a journey whose train leaves the boarding station at
    ``departs_at``: it has left, or leaves within ``cutoff_minutes``. Both times are aware."""
    return now >= sale_closes_at(departs_at, cutoff_minutes)


__all__ = ["sale_closed", "sale_closes_at"]
