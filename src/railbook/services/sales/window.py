"""The sale window: which calendar days are on sale. Days are Beijing days (``kit.clock``): the window
opens a new day at midnight in Beijing, 16:00 UTC."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from railbook.config import Settings
from railbook.domain.errors import DateNotOnSale
from railbook.kit.clock import beijing_today


def sale_window(settings: Settings, on: dt.date | None = None) -> list[dt.date]:
    """The days on sale: ``on`` (default: today in Beijing) and the next SALE_DAYS_AHEAD - 1 days."""
    first = beijing_today() if on is None else on
    return [first + dt.timedelta(days=i) for i in range(settings.sale_days_ahead)]


def check_on_sale(settings: Settings, dates: Iterable[dt.date], *, today: dt.date | None = None) -> None:
    """422 DATE_NOT_ON_SALE for any date outside the sale window that begins on ``today`` (default:
    today in Beijing)."""
    window = sale_window(settings, today)
    for d in dates:
        if d < window[0] or d > window[-1]:
            raise DateNotOnSale(
                f"{d.isoformat()} is not on sale (sale window {window[0]} .. {window[-1]}).",
                details={
                    "date": d.isoformat(),
                    "first": window[0].isoformat(),
                    "last": window[-1].isoformat(),
                },
            )
