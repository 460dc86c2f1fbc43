"""The sale window over HTTP, on both store configurations: its first day is today in Beijing (UTC+8),
whatever zone the server runs in; from 16:00 UTC on that is the day after the UTC date, which is
then no longer on sale."""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx

from tests.support import make_train_day

SEARCH = "/api/v1/trains/search"
OPEN = "/api/v1/admin/sales/open"
# Beijing time as the passenger's clock reads it; deliberately not the code under test's clock.
CHINA_STANDARD_TIME = dt.timezone(dt.timedelta(hours=8))


def _window(client: httpx.AsyncClient) -> tuple[dt.date, dt.date]:
    first = dt.datetime.now(CHINA_STANDARD_TIME).date()
    days = client.app.state.container.settings.sale_days_ahead  # type: ignore[attr-defined]
    return first, first + dt.timedelta(days=days - 1)


def _refused(r: httpx.Response, first: dt.date, last: dt.date) -> None:
    assert r.status_code == 422, r.text
    error: dict[str, Any] = r.json()["error"]
    assert error["code"] == "DATE_NOT_ON_SALE"
    assert (error["details"]["first"], error["details"]["last"]) == (first.isoformat(), last.isoformat())


async def test_the_sale_window_begins_on_the_beijing_date(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    day = await make_train_day(client, admin_headers)
    first, last = _window(client)
    journey = {"from": day["stations"][0][0], "to": day["stations"][-1][0]}
    for date in (first, last):
        r = await client.get(SEARCH, params={**journey, "date": date.isoformat()})
        assert r.status_code == 200, r.text
    # The day before the Beijing date (the UTC date, from 16:00 UTC to midnight UTC) is gone by.
    for date in (first - dt.timedelta(days=1), last + dt.timedelta(days=1)):
        _refused(await client.get(SEARCH, params={**journey, "date": date.isoformat()}), first, last)
        _refused(await client.post(OPEN, json={"date": date.isoformat()}, headers=admin_headers), first, last)
