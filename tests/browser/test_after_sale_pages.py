"""After the sale, in a real Chromium: changing a ticket to another train from a search of the same
route (the old ticket links to its new order), and a waitlist entry offered by a sold-out result."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest

from tests.live_server import Site
from tests.support import wait_until

from .steps import Api, assert_all_chinese_states, login_in_browser, ready, snap, tomorrow

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # a live server and a real browser


async def test_change_a_ticket_to_another_train(page: Any, site: Site) -> None:
    day = tomorrow()
    Api.admin(site).open_sales(day)
    member = Api.new_member(site, "改签乘客")
    person = member.passenger("改签乘客")
    order = await member.book("G1", day, "北京南", "上海虹桥", [person], "second")
    member.pay(order["order_id"])
    await login_in_browser(page, member.mobile, member.password)

    await page.goto("/tickets")
    await ready(page)
    ticket = page.locator("#tickets-list article.ticket[data-status='PAID']").first
    await ticket.locator("button.change").click()
    await ticket.locator(".change-form button[type=submit]").click()
    g3 = ticket.locator(".change-list li[data-train='G3']")
    await g3.wait_for()
    assert await ticket.locator(".change-list li[data-train='G1']").count() == 0  # not the same train again
    await snap(page, "tickets-change-desktop")
    await g3.locator("button.change-to[data-seat-class='second']").click()

    await page.wait_for_url(re.compile(r"/orders/[^/]+$"))
    new_order = page.url.rsplit("/", 1)[1]
    # The same fare: nothing more to pay, the new order is paid by the old ticket by itself.
    await page.wait_for_selector("#order-status[data-state='paid']", timeout=30_000)
    assert await page.is_hidden("#pay")
    await assert_all_chinese_states(page)

    # The old ticket reads "changed" once the new seat holds, and links to the new order.
    old = page.locator(f"#tickets-list article.ticket[data-ticket-id='{order['tickets'][0]['ticket_id']}']")

    async def old_ticket_changed() -> bool:
        await page.goto("/tickets")
        await ready(page)
        await old.wait_for()
        return await old.get_attribute("data-status") == "CHANGED"

    await wait_until(old_ticket_changed, timeout=30, what="the old ticket to read CHANGED")
    assert "已改签" in (await old.text_content() or "")
    assert await old.locator("a.new-order").get_attribute("href") == f"/orders/{new_order}"
    await assert_all_chinese_states(page)


async def test_waitlist_from_a_sold_out_result(page: Any, site: Site) -> None:
    day = tomorrow()
    admin = Api.admin(site)
    code = "G9901"
    train = {
        "code": code,
        "kind": "G",
        "stops": [
            {"station": "北京南", "departs": "21:10", "km": 0},
            {"station": "天津南", "arrives": "21:45", "km": 122},
        ],
        "carriages": [{"carriage": 1, "seat_class": "business", "rows": 1}],
    }
    r = admin.http.post("/api/v1/admin/trains", json=train)
    assert r.status_code in (201, 409), r.text
    admin.open_sales(day)
    buyer = Api.new_member(site, "买光")
    people = [buyer.passenger(f"买光{n}") for n in "甲乙丙"]
    await buyer.book(code, day, "北京南", "天津南", people, "business")

    member = Api.new_member(site, "候补乘客")
    member.passenger("候补乘客")
    await login_in_browser(page, member.mobile, member.password)
    await page.goto(f"/?from=北京南&to=天津南&date={day}")
    await ready(page)
    row = page.locator(f"#results-table tr.offer[data-train='{code}']")
    await row.wait_for()
    cell = row.locator("td[data-seat-class='business']")
    assert "无票" in (await cell.text_content() or "")
    await cell.locator("a.waitlist-link").click()

    await page.wait_for_url("**/book?**waitlist=1**")
    await ready(page)
    assert await page.is_visible("#waitlist-note")
    assert await page.is_hidden("#seat-map-box")
    assert await page.text_content("#book-submit") == "提交候补订单"
    # Wait two hours at most (the deadline is typed in Beijing time, whatever the browser's zone).
    beijing = dt.timezone(dt.timedelta(hours=8))
    deadline = (dt.datetime.now(beijing) + dt.timedelta(hours=2)).replace(second=0, microsecond=0)
    await page.fill("#waitlist-deadline", deadline.strftime("%Y-%m-%dT%H:%M"))
    await page.click("#book-submit")
    await page.wait_for_url("**/waitlist")
    await ready(page)
    entry = page.locator(f"#waitlist-list article.waitlist-entry:has-text('{code}')")
    await entry.wait_for()
    assert "候补中" in (await entry.text_content() or "")
    assert "截止" in (await entry.locator(".waitlist-deadline").text_content() or "")
    [kept] = [w for w in member.call("GET", "/api/v1/waitlist") if w["train_code"] == code]
    assert dt.datetime.fromisoformat(kept["deadline"]) == deadline
    await snap(page, "waitlist-desktop")

    page.once("dialog", lambda dialog: dialog.accept())
    await entry.locator("button.cancel-waitlist").click()
    await page.wait_for_selector("#waitlist-list article.waitlist-entry[data-status='CANCELLED']")
    assert "已取消" in (await entry.text_content() or "")


async def test_change_of_destination_pays_only_the_difference(page: Any, site: Site) -> None:
    day = tomorrow()
    Api.admin(site).open_sales(day)
    member = Api.new_member(site, "变更到站乘客")
    person = member.passenger("变更到站乘客")
    order = await member.book("G1", day, "北京南", "南京南", [person], "second")
    member.pay(order["order_id"])
    old_ticket = order["tickets"][0]
    offers = member.call("GET", f"/api/v1/trains/search?from=北京南&to=上海虹桥&date={day}")
    farther = next(o for o in offers if o["train_code"] == "G1")["seats"]["second"]["price"]
    owed = f"{float(farther) - float(old_ticket['price']):.2f}"
    await login_in_browser(page, member.mobile, member.password)

    await page.goto("/tickets")
    await ready(page)
    ticket = page.locator(f"#tickets-list article.ticket[data-ticket-id='{old_ticket['ticket_id']}']")
    await ticket.locator("button.change-to-station").click()
    await ticket.locator(".change-form input[name='to']").fill("上海虹桥")
    await ticket.locator(".change-form button[type=submit]").click()
    same_train = ticket.locator(".change-list li[data-train='G1']")
    await same_train.wait_for()
    assert await ticket.locator(".change-list li").count() == 1  # the same train only
    await same_train.locator("button.change-to[data-seat-class='second']").click()

    # The new order owes the difference only, and is paid here.
    await page.wait_for_url(re.compile(r"/orders/[^/]+$"))
    new_order = page.url.rsplit("/", 1)[1]
    await page.wait_for_selector("#order-status[data-state='unpaid']", timeout=30_000)
    assert await page.text_content("#order-total-label") == "应补差价"
    assert await page.text_content("#order-total") == f"¥{owed}"
    assert await page.is_visible("#order-origin")
    assert await page.text_content("#order-to") == "上海虹桥"
    await snap(page, "order-change-difference-desktop")
    await page.click("#pay")
    await page.wait_for_selector("#order-status[data-state='paid']")
    assert await page.is_hidden("#pay")
    await assert_all_chinese_states(page)

    old = page.locator(f"#tickets-list article.ticket[data-ticket-id='{old_ticket['ticket_id']}']")

    async def old_ticket_changed() -> bool:
        await page.goto("/tickets")
        await ready(page)
        await old.wait_for()
        return await old.get_attribute("data-status") == "CHANGED"

    await wait_until(old_ticket_changed, timeout=30, what="the old ticket to read CHANGED")
    assert await old.locator("a.new-order").get_attribute("href") == f"/orders/{new_order}"
