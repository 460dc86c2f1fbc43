"""The pages count days as the server does, in Beijing time: a browser in another zone, at an instant
when its own calendar date is not Beijing's, still offers the Beijing day as the first day on sale."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from .steps import ready

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # a live server and a real browser

# 07:00 on Wednesday 1 May in Honolulu is 01:00 on Thursday 2 May in Beijing.
INSTANT = dt.datetime(2030, 5, 1, 17, 0, tzinfo=dt.UTC)


async def test_the_date_strip_starts_on_the_beijing_day_in_a_browser_abroad(abroad: Any) -> None:
    await abroad.clock.set_fixed_time(INSTANT)
    await abroad.goto("/")
    await ready(abroad)
    assert await abroad.evaluate("new Date().getDate()") == 1  # the browser's own calendar: 1 May
    strip = abroad.locator("#date-strip .day")
    assert await strip.count() == 2  # the test site sells two days
    assert [await d.get_attribute("data-date") for d in await strip.all()] == ["2030-05-02", "2030-05-03"]
    assert (await strip.first.text_content() or "") == "5月2日周四"
    assert await abroad.get_attribute("#date", "min") == "2030-05-02"
    assert await abroad.get_attribute("#date", "max") == "2030-05-03"
    assert await abroad.input_value("#date") == "2030-05-03"  # tomorrow in Beijing, as by default


async def test_times_are_shown_and_read_in_beijing_time_in_a_browser_abroad(abroad: Any) -> None:
    """A pay deadline or a blocklist end is shown as Beijing time, and what is typed into a date-time
    field (a waitlist deadline, a block's end) is read as Beijing time, not as the browser's."""
    await abroad.goto("/")
    await ready(abroad)
    shown = await abroad.evaluate("localTime('2030-05-01T17:00:00Z')")
    assert shown.startswith("2030/5/2") and "01:00:00" in shown
    typed = await abroad.evaluate("beijingInput('2030-05-02T01:00').toISOString()")
    assert typed == "2030-05-01T17:00:00.000Z"
    assert await abroad.evaluate("beijingInput('') === null && beijingInput('not a time') === null")
