"""Wall-clock time. Instants are aware and in UTC (what the stores keep); calendar days are Beijing
days, the zone the timetable, the boarding dates and the sale window are in (API.md), whatever zone
the machine runs in. Every "today" of the system comes from ``beijing_today``: a machine on UTC is a
day behind Beijing from 16:00 to 24:00 UTC, so its local date is never the day that is on sale.
"""

from __future__ import annotations

import datetime as dt

from railbook.domain.fees import BEIJING


def utcnow() -> dt.datetime:
    """Now, in UTC."""
    return dt.datetime.now(dt.UTC)


def as_utc(value: dt.datetime) -> dt.datetime:
    """A stored time as aware UTC: SQLite hands back naive datetimes, and everything is stored in UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def beijing_date(instant: dt.datetime) -> dt.date:
    """The Beijing calendar day an instant falls on (a naive instant is UTC, as the stores keep it)."""
    return as_utc(instant).astimezone(BEIJING).date()


def beijing_today(now: dt.datetime | None = None) -> dt.date:
    """Today in Beijing: the first day of the sale window. ``now`` (default: the wall clock) is the
    instant to read it at, for callers that already take one."""
    return beijing_date(utcnow() if now is None else now)


def next_beijing_midnight(now: dt.datetime | None = None) -> dt.datetime:
    """The instant (aware, UTC) the Beijing day after ``now``'s begins: 16:00 UTC."""
    tomorrow = beijing_today(now) + dt.timedelta(days=1)
    return dt.datetime.combine(tomorrow, dt.time(), BEIJING).astimezone(dt.UTC)


__all__ = ["as_utc", "beijing_date", "beijing_today", "next_beijing_midnight", "utcnow"]
