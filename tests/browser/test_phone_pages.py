"""Every page at phone width (390×844) in a real Chromium: nothing wider than the window, results as
cards, the seat map and the admin chart whole."""

from __future__ import annotations

from typing import Any

import pytest

from tests.live_server import Site

from .conftest import ADMIN_MOBILE, ADMIN_PASSWORD
from .steps import Api, assert_no_sideways_scroll, login_in_browser, ready, snap, tomorrow

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # a live server and a real browser


async def test_passenger_pages_fit_a_phone(phone: Any, site: Site) -> None:
    day = tomorrow()
    Api.admin(site).open_sales(day)
    member = Api.new_member(site, "手机乘客")
    person = member.passenger("手机乘客")
    order = await member.book("G1", day, "北京南", "上海虹桥", [person], "first")
    await login_in_browser(phone, member.mobile, member.password)

    await phone.goto(f"/?from=北京南&to=上海虹桥&date={day}")
    await ready(phone)
    first = phone.locator("#results-table tr.offer").first
    await first.wait_for()
    # A result is a card: its seat classes sit under the times, not in ten columns.
    times = await first.locator(".c-dep").bounding_box()
    seats = await first.locator("td.seat-cell:not(.absent)").first.bounding_box()
    assert times and seats and seats["y"] > times["y"] + times["height"] - 1
    await first.locator("button.train-code").click()
    await phone.wait_for_selector("tr.stops-row ol.stops li")
    await assert_no_sideways_scroll(phone)
    await snap(phone, "search-phone")

    await first.locator("td.seat-cell a.book-link").first.click()
    await phone.wait_for_url("**/book?**")
    await ready(phone)
    await phone.wait_for_selector("#seat-map .seat.free")
    await assert_no_sideways_scroll(phone)
    box = await phone.locator("#seat-map .carriage").bounding_box()
    assert box and box["x"] >= 0 and box["x"] + box["width"] <= 390, box
    await snap(phone, "book-seat-map-phone")

    for path, name in [
        (f"/orders/{order['order_id']}", "order-phone"),
        ("/orders", "orders-phone"),
        ("/tickets", "tickets-phone"),
        ("/waitlist", "waitlist-phone"),
        ("/passengers", "passengers-phone"),
    ]:
        await phone.goto(path)
        await ready(phone)
        await assert_no_sideways_scroll(phone)
        await snap(phone, name)
    await phone.goto(f"/orders/{order['order_id']}")
    await ready(phone)
    await phone.wait_for_selector("#order-status[data-state='unpaid']")
    assert await phone.is_visible("#pay")
    await assert_no_sideways_scroll(phone)


async def test_admin_chart_fits_a_phone(phone: Any, site: Site) -> None:
    Api.admin(site).open_sales(tomorrow())
    await login_in_browser(phone, ADMIN_MOBILE, ADMIN_PASSWORD, "/admin")
    await phone.fill("#inv-train", "G113")
    await phone.fill("#inv-date", tomorrow())
    await phone.click("#inventory-form button[type=submit]")
    await phone.wait_for_selector("#inventory .heatmap")
    await phone.wait_for_selector("#trains-table tr[data-train='G1']")
    await assert_no_sideways_scroll(phone)
    await snap(phone, "admin-phone")
