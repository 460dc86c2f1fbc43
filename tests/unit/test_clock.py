"""kit/clock.py and the sale window it starts: calendar days are Beijing days, so from 16:00 UTC on,
"today" is the UTC date's next day. Every instant is passed in: nothing here reads the wall clock."""

from __future__ import annotations

import datetime as dt

import pytest

from railbook.config import Settings
from railbook.domain.errors import DateNotOnSale
from railbook.domain.fees import BEIJING
from railbook.kit.clock import beijing_date, beijing_today, next_beijing_midnight
from railbook.services.sales.window import check_on_sale, sale_window
from railbook.workers.scheduler import pause_before_next_round

UTC_DAY = dt.date(2030, 5, 1)
BEFORE = dt.datetime(2030, 5, 1, 15, 59, 59, tzinfo=dt.UTC)  # 23:59:59 in Beijing, 1 May
AFTER = dt.datetime(2030, 5, 1, 16, 0, tzinfo=dt.UTC)  # 00:00 in Beijing, 2 May; still 1 May in UTC
SETTINGS = Settings(sale_days_ahead=15)


def test_the_beijing_day_begins_at_16_utc() -> None:
    assert beijing_today(BEFORE) == UTC_DAY
    assert beijing_today(AFTER) == UTC_DAY + dt.timedelta(days=1)
    assert AFTER.date() == UTC_DAY  # what the machine's (UTC) local date would have said


def test_an_instant_in_any_zone_is_the_same_beijing_day() -> None:
    new_york = dt.timezone(dt.timedelta(hours=-4))
    assert beijing_date(AFTER.astimezone(new_york)) == beijing_date(AFTER) == dt.date(2030, 5, 2)
    assert beijing_date(dt.datetime(2030, 5, 2, 0, 0, tzinfo=BEIJING)) == dt.date(2030, 5, 2)


def test_a_naive_instant_is_utc_as_the_stores_keep_it() -> None:
    assert beijing_date(AFTER.replace(tzinfo=None)) == dt.date(2030, 5, 2)
    assert beijing_date(BEFORE.replace(tzinfo=None)) == UTC_DAY


def test_the_next_beijing_midnight() -> None:
    assert next_beijing_midnight(BEFORE) == AFTER
    assert next_beijing_midnight(AFTER) == AFTER + dt.timedelta(days=1)
    assert next_beijing_midnight(AFTER).tzinfo == dt.UTC


def test_the_wall_clock_default_is_the_beijing_day() -> None:
    before = dt.datetime.now(BEIJING).date()
    today = beijing_today()
    assert today in {before, dt.datetime.now(BEIJING).date()}


@pytest.mark.parametrize(("instant", "first"), [(BEFORE, UTC_DAY), (AFTER, dt.date(2030, 5, 2))])
def test_the_sale_window_starts_on_the_beijing_day(instant: dt.datetime, first: dt.date) -> None:
    window = sale_window(SETTINGS, beijing_today(instant))
    assert window[0] == first
    assert window[-1] == first + dt.timedelta(days=SETTINGS.sale_days_ahead - 1)
    assert len(window) == SETTINGS.sale_days_ahead


def test_after_16_utc_the_utc_date_is_no_longer_on_sale_and_a_new_last_day_is() -> None:
    today = beijing_today(AFTER)
    with pytest.raises(DateNotOnSale) as refused:
        check_on_sale(SETTINGS, [UTC_DAY], today=today)
    assert refused.value.details["first"] == "2030-05-02"
    check_on_sale(SETTINGS, [today, today + dt.timedelta(days=SETTINGS.sale_days_ahead - 1)], today=today)
    # A second earlier the same dates are the other way round.
    before = beijing_today(BEFORE)
    check_on_sale(SETTINGS, [UTC_DAY], today=before)
    with pytest.raises(DateNotOnSale):
        check_on_sale(SETTINGS, [today + dt.timedelta(days=SETTINGS.sale_days_ahead - 1)], today=before)


def test_the_scheduler_wakes_as_the_beijing_day_changes() -> None:
    assert pause_before_next_round(10.0, BEFORE) == pytest.approx(1.0)
    assert pause_before_next_round(10.0, AFTER) == 10.0
    assert pause_before_next_round(30.0, AFTER - dt.timedelta(seconds=12.5)) == pytest.approx(12.5)
