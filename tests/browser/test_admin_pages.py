"""The admin page in a real Chromium: the trains list, opening sales inside the window, a train-day's
inventory as a chart that stays readable for a long train, and the train editor with the API's
refusals beside the fields."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from railbook.kit.clock import beijing_today
from tests.live_server import Site

from .conftest import ADMIN_MOBILE, ADMIN_PASSWORD, ARTEFACTS
from .steps import Api, login_in_browser, ready, snap, tomorrow

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # a live server and a real browser


async def admin_page(page: Any) -> None:
    await login_in_browser(page, ADMIN_MOBILE, ADMIN_PASSWORD, "/admin")
    assert await page.is_visible("#admin")
    assert await page.is_visible("nav a[data-nav='admin']")


async def test_admin_opens_sales_and_reads_inventory_as_a_chart(page: Any, site: Site) -> None:
    await admin_page(page)
    await page.wait_for_selector("#stations-table tbody tr:has-text('北京南')")
    assert await page.text_content("#trains-table tr[data-train='G1'] .stop-count") == "4 站"

    # A day past the sale window is refused beside the field, in Chinese, before anything is sent.
    beyond = (beijing_today() + dt.timedelta(days=30)).isoformat()
    await page.fill("#open-from", tomorrow())
    await page.fill("#open-to", beyond)
    await page.click("#open-sales")
    beside = page.locator("label:has(#open-to) .field-error")
    await beside.wait_for()
    assert "超出预售期" in (await beside.text_content() or "")
    assert await page.get_attribute("#error", "data-code") == "DATE_NOT_ON_SALE"

    await page.fill("#open-to", tomorrow())
    await page.click("#open-sales")
    await page.wait_for_selector("#notice:not([hidden])")
    assert "个车次日" in (await page.text_content("#open-result") or "")

    # G113 stops 23 times: every pair in one heat map, every segment one bar, within the card.
    await page.fill("#inv-train", "G113")
    await page.fill("#inv-date", tomorrow())
    await page.click("#inventory-form button[type=submit]")
    chart = page.locator("#inventory .inventory-class[data-seat-class='second']")
    await chart.wait_for()
    assert await chart.locator(".heatmap .hm-cell[data-pair]").count() == 23 * 22 // 2
    assert await chart.locator(".bars .bar-row").count() == 22
    assert await chart.locator(".hm-cell[data-pair='0-22']").get_attribute("title")
    size = await page.evaluate(
        "() => { const b = document.querySelector('#inventory'); const h = b.querySelector('.heatmap');"
        " return [b.scrollWidth, b.clientWidth, h.getBoundingClientRect().height]; }"
    )
    assert size[0] <= size[1], f"the chart is wider than its card: {size}"
    assert size[2] < 900, f"the heat map is {size[2]}px tall"
    await snap(page, "admin-inventory-desktop")
    await page.locator("#inventory").screenshot(path=str(ARTEFACTS / "admin-inventory-chart.png"))


async def test_admin_edits_a_train_with_errors_beside_the_fields(page: Any, site: Site) -> None:
    admin = Api.admin(site)
    train = {
        "code": "G9902",
        "kind": "G",
        "stops": [
            {"station": "北京南", "departs": "10:00", "km": 0},
            {"station": "天津南", "arrives": "10:35", "km": 122},
        ],
        "carriages": [{"carriage": 1, "seat_class": "second", "rows": 10}],
    }
    r = admin.http.put("/api/v1/admin/trains/G9902", json=train)
    if r.status_code == 404:
        r = admin.http.post("/api/v1/admin/trains", json=train)
    assert r.status_code in (200, 201), r.text

    await admin_page(page)
    await page.locator("#trains-table tr[data-train='G9902'] button.edit-train").click()
    await page.wait_for_selector("#train-form:not([hidden])")
    assert await page.locator("#tf-stops tbody tr").count() == 2

    # km must increase: the API's refusal lands beside the second stop's km.
    second_km = page.locator("#tf-stops tbody tr:nth-child(2) input[name='km']")
    await second_km.fill("0")
    await page.click("#tf-save")
    beside = page.locator("#tf-stops tbody tr:nth-child(2) td:has(input[name='km']) .field-error")
    await beside.wait_for()
    assert (await beside.text_content() or "").strip()
    assert await second_km.get_attribute("aria-invalid") == "true"
    await snap(page, "admin-editor-error-desktop")

    await second_km.fill("122")
    await page.click("#tf-add-carriage")
    await page.click("#tf-save")
    await page.wait_for_selector("#notice:not([hidden])")
    assert "已保存" in (await page.text_content("#notice") or "")
    saved = admin.call("GET", "/api/v1/admin/trains/G9902")
    assert [c["carriage"] for c in saved["carriages"]] == [1, 2]


async def test_admin_page_refuses_a_plain_member(page: Any, site: Site) -> None:
    member = Api.new_member(site)
    await login_in_browser(page, member.mobile, member.password, "/admin")
    assert await page.is_visible("#admin-denied")
    assert await page.is_hidden("#admin")
    assert await page.is_hidden("nav a[data-nav='admin']")


async def test_admin_blocks_and_lifts_a_mobile_and_an_address(page: Any, site: Site) -> None:
    member = Api.new_member(site, "被限制的人")
    await admin_page(page)
    await page.click(".subnav a[data-subnav='blocklist']")
    await page.wait_for_url("**/admin/blocklist")
    await ready(page)
    assert await page.get_attribute("nav a[data-nav='admin']", "class") == "admin-only active"

    # Refusals land beside their fields, in Chinese: one the page knows, one only the API does.
    await page.fill("#block-target", "1234")
    await page.click("#block-add")
    reason_error = page.locator("label:has(#block-reason) .field-error")
    await reason_error.wait_for()
    assert await reason_error.text_content() == "请填写原因"
    await page.fill("#block-reason", "批量刷票")
    async with page.expect_response("**/api/v1/admin/blocklist") as refused:
        await page.click("#block-add")
    assert (await refused.value).status == 422
    beside = page.locator("label:has(#block-target) .field-error")
    await beside.wait_for()
    assert "11 位手机号" in (await beside.text_content() or "")
    assert await page.get_attribute("#error", "data-code") == "VALIDATION_ERROR"

    # A mobile blocked for good: listed, and that member's login is refused.
    await page.fill("#block-target", member.mobile)
    await page.click("#block-add")
    row = page.locator("#blocks-table tbody tr", has_text=member.mobile)
    await row.wait_for()
    assert "永久" in (await row.text_content() or "")
    assert "生效中" in (await row.text_content() or "")
    credentials = {"mobile": member.mobile, "password": member.password}
    r = member.http.post("/api/v1/auth/login", json=credentials)
    assert r.status_code == 403 and r.json()["error"]["code"] == "BLOCKED", r.text

    # An address network until a given time.
    await page.select_option("#block-kind", "ip")
    assert await page.text_content("#block-target-name") == "IP 地址"
    await page.fill("#block-target", "198.51.100.0/24")
    await page.fill("#block-reason", "异常流量")
    until = (dt.datetime.now() + dt.timedelta(days=3)).replace(second=0, microsecond=0)
    await page.fill("#block-until", until.strftime("%Y-%m-%dT%H:%M"))
    await page.click("#block-add")
    network = page.locator("#blocks-table tbody tr", has_text="198.51.100.0/24")
    await network.wait_for()
    assert "至 " in (await network.locator(".block-until").text_content() or "")
    await snap(page, "admin-blocklist-desktop")

    # Lift both: the member logs in again.
    for entry in (row, network):
        page.once("dialog", lambda dialog: dialog.accept())
        await entry.locator("button.remove-block").click()
        await entry.wait_for(state="detached")
    r = member.http.post("/api/v1/auth/login", json=credentials)
    assert r.status_code == 200, r.text
