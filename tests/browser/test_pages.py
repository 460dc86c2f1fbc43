"""The pages in a real Chromium against a real ``railbook serve``: what a passenger and an admin do."""

from __future__ import annotations

import datetime as dt
import random
import re
from typing import Any

import httpx
import pytest

from railbook.domain.identity import compose_id_card

from .conftest import ADMIN_MOBILE, ADMIN_PASSWORD, Site

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # a live server and a real browser

_rng = random.Random()


def fresh_mobile() -> str:
    return "135" + f"{_rng.randrange(10**8):08d}"


def fresh_id_card() -> str:
    birth = dt.date(1970, 1, 1) + dt.timedelta(days=_rng.randrange(15000))
    return compose_id_card("320102", birth, _rng.randrange(1000))


def tomorrow() -> str:
    return (dt.date.today() + dt.timedelta(days=1)).isoformat()


async def ready(page: Any) -> None:
    """The page script has finished its start-up (header and first loads)."""
    await page.wait_for_selector("body[data-ready='1']", state="attached")


async def register_in_browser(page: Any, name: str = "测试乘客") -> tuple[str, str]:
    mobile, password = fresh_mobile(), "browser-pass-1"
    await page.goto("/register")
    await ready(page)
    await page.fill("#mobile", mobile)
    await page.fill("#name", name)
    await page.fill("#password", password)
    await page.click("#register-form button[type=submit]")
    await page.wait_for_url("**/passengers")
    await ready(page)
    return mobile, password


async def add_passenger_in_browser(page: Any, name: str, id_card: str) -> None:
    await page.fill("#p-name", name)
    await page.fill("#p-id-card", id_card)
    await page.click("#passenger-form button[type=submit]")
    await page.wait_for_selector(f"#passengers-table tbody tr:has-text('{name}')")


def open_sales_via_api(site: Site, date: str) -> None:
    """Make sure the day is on sale (idempotent), as the scheduler would have done."""
    with httpx.Client(base_url=site.url, timeout=30) as http:
        r = http.post("/api/v1/auth/login", json={"mobile": ADMIN_MOBILE, "password": ADMIN_PASSWORD})
        assert r.status_code == 200, r.text
        headers = {"Authorization": f"Bearer {r.json()['access_token']}"}
        r = http.post("/api/v1/admin/sales/open", json={"date": date}, headers=headers)
        assert r.status_code == 200, r.text


async def test_register_login_and_manage_passengers(page: Any) -> None:
    mobile, password = await register_in_browser(page, "王小明")
    assert await page.text_content("#whoami") == f"王小明（{mobile}）"
    assert await page.is_visible("#passengers-empty")

    number = fresh_id_card()
    await add_passenger_in_browser(page, "王小明", number)
    row = page.locator("#passengers-table tbody tr", has_text="王小明")
    assert await row.locator("code").text_content() == number[:6] + "********" + number[-4:]

    # A bad checksum is refused by the server and its message shown; nothing is added.
    bad = number[:17] + ("0" if number[17] != "0" else "1")
    await page.fill("#p-name", "李小红")
    await page.fill("#p-id-card", bad)
    await page.click("#passenger-form button[type=submit]")
    await page.wait_for_selector("#error:not([hidden])")
    assert await page.get_attribute("#error", "data-code") == "VALIDATION_ERROR"
    assert "id_card" in (await page.text_content("#error") or "")
    assert await page.locator("#passengers-table tbody tr").count() == 1

    # Delete it again.
    page.once("dialog", lambda dialog: dialog.accept())
    await row.locator("button").click()
    await page.wait_for_selector("#passengers-empty:not([hidden])")

    # Log out, be sent to log in when opening a private page, and come back there.
    await page.click("#nav-logout")
    await page.wait_for_url(re.compile(r"/$"))
    await page.goto("/passengers")
    await page.wait_for_url("**/login?next=%2Fpassengers")
    await ready(page)
    await page.fill("#mobile", mobile)
    await page.fill("#password", "wrong-password")
    await page.click("#login-form button[type=submit]")
    await page.wait_for_selector("#error:not([hidden])")
    assert await page.get_attribute("#error", "data-code") == "BAD_CREDENTIALS"
    await page.fill("#password", password)
    await page.click("#login-form button[type=submit]")
    await page.wait_for_url("**/passengers")


async def test_duplicate_mobile_shows_the_servers_message(page: Any) -> None:
    mobile, _ = await register_in_browser(page)
    await page.click("#nav-logout")
    await page.wait_for_url(re.compile(r"/$"))
    await page.goto("/register")
    await ready(page)
    await page.fill("#mobile", mobile)
    await page.fill("#name", "另一个人")
    await page.fill("#password", "another-pass-1")
    await page.click("#register-form button[type=submit]")
    await page.wait_for_selector("#error:not([hidden])")
    assert await page.get_attribute("#error", "data-code") == "MOBILE_TAKEN"
    assert page.url.endswith("/register")


async def test_unknown_station_shows_the_error_message(page: Any) -> None:
    await page.goto("/")
    await ready(page)
    await page.fill("#from", "不存在站")
    await page.fill("#to", "上海虹桥")
    await page.fill("#date", tomorrow())
    await page.click("#search-form button[type=submit]")
    await page.wait_for_selector("#error:not([hidden])")
    assert await page.get_attribute("#error", "data-code") == "STATION_NOT_FOUND"
    assert (await page.text_content("#error") or "").strip()
    assert await page.is_hidden("#results")


async def test_search_book_pay(page: Any, site: Site) -> None:
    day = tomorrow()
    open_sales_via_api(site, day)
    await register_in_browser(page, "周杰")
    await add_passenger_in_browser(page, "周杰", fresh_id_card())

    # Search by name on one side and telegraph code on the other.
    await page.goto("/")
    await ready(page)
    await page.fill("#from", "北京南")
    await page.fill("#to", "AOH")
    await page.fill("#date", day)
    await page.click("#search-form button[type=submit]")
    await page.wait_for_selector("#results:not([hidden])")
    rows = page.locator("#results-table tbody tr")
    assert await rows.count() > 0
    first = rows.first
    assert "北京南" in (await first.text_content() or "")
    assert "上海虹桥" in (await first.text_content() or "")
    second = page.locator("#results-table td[data-seat-class='second'] a.book-link").first
    await second.click()

    await page.wait_for_url("**/book?**")
    await ready(page)
    await page.wait_for_selector("#book-passengers tbody tr")
    assert await page.input_value("#seat-class") == "second"
    row = page.locator("#book-passengers tbody tr", has_text="周杰")
    assert await row.locator("input.pick").is_checked()
    await row.locator("select.seat-pref").select_option("F")
    await page.click("#book-submit")

    await page.wait_for_url(re.compile(r"/orders/[^/]+$"))
    await page.wait_for_selector("#order-status[data-status='SUCCESS']", timeout=30_000)
    seat = await page.locator("#tickets-table tbody tr td.seat").first.text_content()
    assert seat is not None and re.fullmatch(r"\d{2}-\d{2}F", seat), seat
    assert await page.get_attribute("#order-payment", "data-status") == "UNPAID"
    assert await page.is_visible("#pay")

    await page.click("#pay")
    await page.wait_for_selector("#order-payment[data-status='PAID']")
    assert await page.is_hidden("#pay")
    order_url = page.url

    # The order is in "my orders", paid.
    await page.goto("/orders")
    await ready(page)
    order_id = order_url.rsplit("/", 1)[1]
    await page.wait_for_selector(f"#orders-table tr[data-order-id='{order_id}']")
    listed = page.locator(f"#orders-table tr[data-order-id='{order_id}']")
    assert "已支付" in (await listed.text_content() or "")


async def test_admin_opens_sales_and_reads_inventory(page: Any) -> None:
    await page.goto("/login?next=%2Fadmin")
    await ready(page)
    await page.fill("#mobile", ADMIN_MOBILE)
    await page.fill("#password", ADMIN_PASSWORD)
    await page.click("#login-form button[type=submit]")
    await page.wait_for_url("**/admin")
    await ready(page)
    assert await page.is_visible("#admin")
    assert await page.is_visible("nav a[data-nav='admin']")
    await page.wait_for_selector("#stations-table tbody tr:has-text('北京南')")

    await page.fill("#open-from", tomorrow())
    await page.fill("#open-to", tomorrow())
    await page.click("#open-sales")
    await page.wait_for_selector("#notice:not([hidden])")
    assert "个车次日" in (await page.text_content("#open-result") or "")

    await page.fill("#inv-train", "G1")
    await page.fill("#inv-date", tomorrow())
    await page.click("#inventory-form button[type=submit]")
    await page.wait_for_selector("#inventory .inventory-class")
    assert await page.locator("#inventory table.remaining td[data-pair='0-1']").count() >= 1


async def test_admin_page_refuses_a_plain_member(page: Any) -> None:
    await register_in_browser(page)
    await page.goto("/admin")
    await ready(page)
    assert await page.is_visible("#admin-denied")
    assert await page.is_hidden("#admin")
    assert await page.is_hidden("nav a[data-nav='admin']")
