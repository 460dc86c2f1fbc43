"""The pages in a real Chromium against a real ``railbook serve``: what a passenger and an admin do."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from .conftest import ADMIN_MOBILE, ADMIN_PASSWORD, Site
from .steps import fresh_id_card, fresh_mobile, ready, tomorrow

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # a live server and a real browser


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
    beside = page.locator("label:has(#p-id-card) .field-error")
    assert "身份证号" in (await beside.text_content() or "")
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
    assert "已注册" in (await page.text_content("#error") or "")
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
    # In Chinese, and beside the field it concerns.
    assert re.search(r"[\u4e00-\u9fff]", await page.text_content("#error") or "")
    beside = await page.locator("label:has(#from) .field-error").text_content()
    assert beside and re.search(r"[\u4e00-\u9fff]", beside)
    assert await page.is_hidden("#results")
