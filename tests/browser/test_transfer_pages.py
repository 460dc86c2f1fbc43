"""Journeys with one change of train in a real Chromium: listed by themselves when no train runs
through, and on demand (显示中转方案) beside the direct trains; each leg books on its own."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.live_server import Site

from .steps import Api, ready, snap, tomorrow

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # a live server and a real browser

# Two trains meeting at 换乙: no train runs from 换甲 to 换丙.
STATIONS = [("换甲", "ZZA", "huanjia"), ("换乙", "ZZB", "huanyi"), ("换丙", "ZZC", "huanbing")]
TRAINS = [
    ("G9911", [("换甲", None, "08:00", 0), ("换乙", "09:00", None, 120)]),
    ("G9912", [("换乙", None, "10:00", 0), ("换丙", "11:30", None, 200)]),
]


def a_network_with_one_change(site: Site, day: str) -> None:
    admin = Api.admin(site)
    for name, code, pinyin in STATIONS:
        r = admin.http.post("/api/v1/admin/stations", json={"name": name, "code": code, "pinyin": pinyin})
        assert r.status_code in (201, 409), r.text
    for code, stops in TRAINS:
        train = {
            "code": code,
            "kind": "G",
            "stops": [
                {"station": s, "km": km, **({"arrives": a} if a else {}), **({"departs": d} if d else {})}
                for s, a, d, km in stops
            ],
            "carriages": [{"carriage": 1, "seat_class": "second", "rows": 5}],
        }
        r = admin.http.post("/api/v1/admin/trains", json=train)
        assert r.status_code in (201, 409), r.text
    admin.open_sales(day)


async def test_transfers_when_no_train_runs_through(page: Any, site: Site) -> None:
    day = tomorrow()
    a_network_with_one_change(site, day)
    await page.goto(f"/?from=换甲&to=换丙&date={day}")
    await ready(page)
    await page.wait_for_selector("#transfers:not([hidden])")
    assert "没有直达车次" in (await page.text_content("#results-summary") or "")
    assert await page.is_hidden("#results-table")
    journey = page.locator("#transfers-list article.transfer").first
    head = await journey.locator(".transfer-head").text_content() or ""
    assert "换乙 换乘" in head and "等候 1小时0分" in head
    legs = journey.locator("tr.offer")
    assert await legs.evaluate_all("(rows) => rows.map((r) => r.dataset.train)") == ["G9911", "G9912"]
    await snap(page, "search-transfers-desktop")

    # Each leg books as its own order, for its own stretch.
    href = await legs.nth(1).locator("td[data-seat-class='second'] a.book-link").get_attribute("href")
    query = parse_qs(urlsplit(href or "").query)
    assert (query["train_code"], query["from"], query["to"], query["date"]) == (
        ["G9912"],
        ["换乙"],
        ["换丙"],
        [day],
    )


async def test_transfers_on_demand_beside_direct_trains(page: Any, site: Site) -> None:
    day = tomorrow()
    Api.admin(site).open_sales(day)
    await page.goto(f"/?from=北京南&to=上海虹桥&date={day}")
    await ready(page)
    await page.wait_for_selector("#results-table tr.offer")
    assert await page.is_hidden("#transfers")

    await page.check("#f-transfers")
    journey = page.locator("#transfers-list article.transfer").first
    await journey.wait_for()
    assert await page.is_visible("#transfers")
    assert await journey.locator("tr.offer").count() == 2
    assert "换乘" in (await journey.locator(".transfer-head").text_content() or "")

    await page.uncheck("#f-transfers")
    await page.wait_for_selector("#transfers", state="hidden")
