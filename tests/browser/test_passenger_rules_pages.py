"""The passenger rules in a real Chromium, each refusal shown in Chinese beside the passenger it
concerns: a child fare for someone 14 or older (NOT_A_CHILD), one person in two seats at once
(TRIP_CONFLICT), and deleting a passenger who still holds tickets (PASSENGER_HAS_TICKETS)."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest

from tests.live_server import Site

from .steps import Api, fresh_id_card, login_in_browser, ready, snap, tomorrow

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # a live server and a real browser

CHINESE = re.compile(r"[\u4e00-\u9fff]")


async def book_only(page: Any, passenger_id: int) -> Any:
    """Pick just this passenger and submit; the API's answer to the order."""
    for box in await page.locator("#book-passengers input.pick").all():
        if await box.is_checked():
            await box.uncheck()
    await page.locator(f"#book-passengers tr[data-passenger-id='{passenger_id}'] input.pick").check()
    async with page.expect_response(lambda r: r.url.endswith("/api/v1/orders")) as answer:
        await page.click("#book-submit")
    return await answer.value


async def test_refusals_beside_the_passenger(page: Any, site: Site) -> None:
    day = tomorrow()
    Api.admin(site).open_sales(day)
    member = Api.new_member(site, "规则乘客")
    traveller = member.passenger("规则乘客")
    grown = member.passenger("长大的孩子", "child", fresh_id_card(dt.date(1990, 5, 1)))
    child = member.passenger("真儿童", "child")
    order = await member.book("G1", day, "北京南", "上海虹桥", [traveller], "second")
    member.pay(order["order_id"])
    await login_in_browser(page, member.mobile, member.password)

    await page.goto(f"/book?train_code=G3&date={day}&from=北京南&to=上海虹桥&seat_class=second")
    await ready(page)
    await page.wait_for_selector("#seat-map .seat.free")

    # A child fare is the API's child price of the class.
    offers = member.call("GET", f"/api/v1/trains/search?from=北京南&to=上海虹桥&date={day}")
    prices = next(o for o in offers if o["train_code"] == "G3")["seats"]["second"]["prices"]
    child_row = page.locator(f"#book-passengers tr[data-passenger-id='{child}']")
    await child_row.locator("input.pick").check()
    assert await child_row.locator(".p-type").text_content() == "儿童票"
    assert await child_row.locator(".p-price").text_content() == f"¥{prices['child']}"

    # NOT_A_CHILD: beside the grown "child", nowhere else.
    answer = await book_only(page, grown)
    assert answer.status == 422
    grown_row = page.locator(f"#book-passengers tr[data-passenger-id='{grown}']")
    beside = grown_row.locator(".field-error")
    await beside.wait_for()
    assert "14" in (await beside.text_content() or "")
    assert CHINESE.search(await beside.text_content() or "")
    assert await page.get_attribute("#error", "data-code") == "NOT_A_CHILD"
    assert await page.locator("#book-passengers .field-error").count() == 1

    # TRIP_CONFLICT: the traveller already rides G1 at that time; said in Chinese beside them.
    answer = await book_only(page, traveller)
    assert answer.status == 409
    beside = page.locator(f"#book-passengers tr[data-passenger-id='{traveller}'] .field-error")
    await beside.wait_for()
    assert "冲突" in (await beside.text_content() or "")
    assert await page.get_attribute("#error", "data-code") == "TRIP_CONFLICT"
    assert await page.locator("#book-passengers .field-error").count() == 1
    await snap(page, "book-trip-conflict-desktop")
    assert "/book" in page.url

    # PASSENGER_HAS_TICKETS: the traveller cannot be deleted while the G1 ticket is ahead.
    await page.goto("/passengers")
    await ready(page)
    row = page.locator(f"#passengers-table tbody tr[data-passenger-id='{traveller}']")
    page.once("dialog", lambda dialog: dialog.accept())
    await row.locator("button.danger").click()
    beside = row.locator(".field-error")
    await beside.wait_for()
    assert "不能删除" in (await beside.text_content() or "")
    assert "1 段行程" in (await beside.text_content() or "")
    assert await page.get_attribute("#error", "data-code") == "PASSENGER_HAS_TICKETS"
    assert await page.locator("#passengers-table tbody tr").count() == 3

    # Once the ticket is refunded the passenger can go.
    member.call("POST", f"/api/v1/tickets/{order['tickets'][0]['ticket_id']}/refund")
    await page.reload()
    await ready(page)
    page.once("dialog", lambda dialog: dialog.accept())
    await row.locator("button.danger").click()
    await row.wait_for(state="detached")
