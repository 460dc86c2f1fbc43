"""Wall-clock time, always aware and in UTC (what the stores keep)."""

from __future__ import annotations

import datetime as dt


def utcnow() -> dt.datetime:
    """Now, in UTC."""
    return dt.datetime.now(dt.UTC)


def as_utc(value: dt.datetime) -> dt.datetime:
    """A stored time as aware UTC: SQLite hands back naive datetimes, and everything is stored in UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
