"""Every page at phone width (390×844) in a real Chromium: nothing wider than the window, results as
cards, the seat map and the admin chart whole."""

from __future__ import annotations

from typing import Any

import pytest

from tests.live_server import Site

from .conftest import ADMIN_MOBILE, ADMIN_PASSWORD
from .in_process import InProcessSite
from .steps import Api, assert_no_sideways_scroll, login_in_browser, ready, snap, tomorrow
from .test_transfer_pages import a_network_with_one_change

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

    # Journeys with one change, as cards too.
    a_network_with_one_change(site, day)
    await phone.goto(f"/?from=换甲&to=换丙&date={day}")
    await ready(phone)
    await phone.wait_for_selector("#transfers-list article.transfer tr.offer")
    await assert_no_sideways_scroll(phone)
    await snap(phone, "search-transfers-phone")

    for path, name in [
        ("/login", "login-phone"),
        ("/register", "register-phone"),
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

    admin = Api.admin(site)
    admin.call(
        "POST",
        "/api/v1/admin/blocklist",
        {"ip": "2001:db8:ffff::/48", "reason": "手机宽度检查：很长的原因" * 4},
        201,
    )
    await phone.click(".subnav a[data-subnav='blocklist']")
    await phone.wait_for_url("**/admin/blocklist")
    await ready(phone)
    await phone.wait_for_selector("#blocks-table tbody tr:has-text('2001:db8:ffff::/48')")
    await phone.fill("#block-target", "1")
    await phone.click("#block-add")
    await phone.wait_for_selector("label:has(#block-reason) .field-error")
    await assert_no_sideways_scroll(phone)
    await snap(phone, "admin-blocklist-phone")


async def test_login_captcha_fits_a_phone(guarded_phone: Any, guarded_site: InProcessSite) -> None:
    member = Api.new_member(guarded_site, "手机验证码")
    await guarded_phone.goto("/login")
    await ready(guarded_phone)
    await guarded_phone.fill("#mobile", member.mobile)
    for n in range(6):
        await guarded_phone.fill("#password", f"wrong-password-{n}")
        async with guarded_phone.expect_response(lambda r: r.url.endswith("/api/v1/auth/login")):
            await guarded_phone.click("#login-form button[type=submit]")
    await guarded_phone.wait_for_selector(
        "#captcha-box:not([hidden]) img.captcha-image[src^='data:image/png']"
    )
    await assert_no_sideways_scroll(guarded_phone)
    await snap(guarded_phone, "login-captcha-phone")
