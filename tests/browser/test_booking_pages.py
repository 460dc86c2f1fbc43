"""A passenger's whole trip in a real Chromium: search with station suggestions, the seat map, booking
for an adult and a child, the queue, paying against the countdown, and a refund with its fee shown first."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.live_server import Site

from .steps import Api, assert_all_chinese_states, login_in_browser, ready, snap, tomorrow

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # a live server and a real browser

CHINESE = re.compile(r"[\u4e00-\u9fff]")


async def test_search_seat_map_book_pay_refund(page: Any, site: Site) -> None:
    day = tomorrow()
    Api.admin(site).open_sales(day)
    member = Api.new_member(site, "周杰")
    member.passenger("周杰")
    member.passenger("周小杰", "child")
    await login_in_browser(page, member.mobile, member.password)

    # Search: a station suggested by its initials; a telegraph code is typed as it is.
    await page.goto("/")
    await ready(page)
    await page.type("#from", "bjn")
    option = page.locator("#from-suggest li[data-name='北京南']")
    await option.wait_for()
    await option.click()
    assert await page.input_value("#from") == "北京南"
    await page.fill("#to", "AOH")
    await page.fill("#date", day)
    await page.click("#search-form button[type=submit]")
    await page.wait_for_selector("#results:not([hidden])")
    assert await page.get_attribute(f"#date-strip .day[data-date='{day}']", "aria-pressed") == "true"
    rows = page.locator("#results-table tbody tr.offer")
    assert await rows.count() > 0
    assert "上海虹桥" in (await rows.first.text_content() or "")

    # Filters and sorting act on the day's answer.
    total = await rows.count()
    await page.select_option("#f-sort", "duration")
    durations = [await r.locator(".c-dur").text_content() for r in await rows.all()]
    assert len(durations) == total
    await page.select_option("#f-time", "18-24")
    late = await rows.count()
    assert late < total
    await page.select_option("#f-time", "")

    # A train's stops, boarding and alighting highlighted.
    g1 = page.locator("#results-table tr.offer[data-train='G1']")
    await g1.locator("button.train-code").click()
    stops = page.locator("#results-table tr.stops-row[data-train='G1'] ol.stops li")
    await stops.first.wait_for()
    assert await stops.count() == 4
    assert await page.locator("tr.stops-row li.on-journey").count() == 4
    await snap(page, "search-desktop")

    # Book G1 second class: the seat map of the class, a seat chosen for the adult.
    await g1.locator("td[data-seat-class='second'] a.book-link").click()
    await page.wait_for_url("**/book?**")
    await ready(page)
    tabs = page.locator("#class-tabs .class-tab")
    assert sorted(await tabs.evaluate_all("(ts) => ts.map((t) => t.dataset.seatClass)")) == [
        "business",
        "first",
        "second",
    ]
    assert (
        await page.get_attribute("#class-tabs .class-tab[data-seat-class='second']", "aria-checked") == "true"
    )
    await page.wait_for_selector("#seat-map .carriage .seat.free")
    adult = page.locator("#book-passengers tbody tr", has_text="周杰").first
    child = page.locator("#book-passengers tbody tr", has_text="周小杰")
    assert await adult.locator("input.pick").is_checked()
    await child.locator("input.pick").check()
    assert (await child.locator(".p-type").text_content()) == "儿童票"
    adult_fare = float((await adult.locator(".p-price").text_content() or "").lstrip("¥"))
    child_fare = float((await child.locator(".p-price").text_content() or "").lstrip("¥"))
    assert abs(child_fare * 2 - adult_fare) <= 1.0
    total_text = await page.text_content("#book-total")
    assert total_text == f"¥{adult_fare + child_fare:.2f}"
    assert "余" in (await page.text_content("#book-left") or "")

    await adult.locator("button.choose-seat").click()
    free = page.locator("#seat-map .seat.free[data-seat$='F']").first
    chosen = await free.get_attribute("data-seat")
    assert chosen
    await free.click()
    carriage, row = chosen[:2], chosen[3:5]
    assert await adult.locator(".p-seat").text_content() == f"{carriage}车{row}F号选座"
    assert await page.locator(f"#seat-map .seat.chosen[data-seat='{chosen}']").count() == 1
    await snap(page, "book-seat-map-desktop")
    await page.click("#book-submit")

    # Queue, then seats held with a running countdown; no raw states on the page.
    await page.wait_for_url(re.compile(r"/orders/[^/]+$"))
    await page.wait_for_selector("#order-status[data-state='unpaid']", timeout=30_000)
    seats = await page.locator("#tickets-table td.seat").evaluate_all("(ts) => ts.map((t) => t.dataset.seat)")
    assert chosen in seats
    countdown = page.locator("#order-countdown")
    assert (await countdown.text_content() or "").startswith("剩余")
    first_left = int(await countdown.get_attribute("data-seconds") or 0)
    await page.wait_for_function(
        f"() => Number(document.querySelector('#order-countdown').dataset.seconds) < {first_left}"
    )
    await assert_all_chinese_states(page)
    await snap(page, "order-unpaid-desktop")

    await page.click("#pay")
    await page.wait_for_selector("#order-status[data-state='paid']")
    assert await page.is_hidden("#pay")
    text = await page.text_content("#order")
    assert text and "待支付" not in text
    order_url = page.url

    # The tickets: refund one with the fee shown before confirming; the answer matches the quote.
    await page.goto("/tickets")
    await ready(page)
    ticket = page.locator("#tickets-list article.ticket[data-status='PAID']", has_text="周小杰")
    await ticket.locator("button.refund").click()
    fee = await ticket.locator(".quote-fee").text_content()
    refund = await ticket.locator(".quote-refund").text_content()
    assert fee and refund
    async with page.expect_response(lambda r: r.url.endswith("/refund")) as refund_answer:
        await ticket.locator("button.confirm-refund").click()
    answer = await (await refund_answer.value).json()
    assert (f"¥{answer['fee']}", f"¥{answer['refund_amount']}") == (fee, refund)
    await page.wait_for_selector("#notice:not([hidden])")
    assert f"退款 {refund}" in (await page.text_content("#notice") or "")
    assert f"手续费 {fee}" in (await page.text_content("#notice") or "")
    refunded = page.locator("#tickets-list article.ticket[data-status='REFUNDED']", has_text="周小杰")
    assert "已退票" in (await refunded.text_content() or "")
    await assert_all_chinese_states(page)

    # The order now reads "part refunded" with the amount and the fee.
    await page.goto(order_url)
    await ready(page)
    await page.wait_for_selector("#order-status[data-state='partly_refunded']")
    assert await page.text_content("#order-status") == "部分退票"
    # The amount and the fee are the refund's answer.
    summary = f"已退款 ¥{answer['refund_amount']}（手续费 ¥{answer['fee']}）"
    assert await page.text_content("#order-refund") == summary
    line = page.locator("#tickets-table tr", has_text="周小杰").locator(".refund-line")
    assert await line.text_content() == f"退款 ¥{answer['refund_amount']}，手续费 ¥{answer['fee']}"
    await assert_all_chinese_states(page)

    await page.goto("/orders")
    await ready(page)
    listed = page.locator("#orders-list .order-card").first
    await listed.wait_for()
    assert "部分退票" in (await listed.text_content() or "")
    await assert_all_chinese_states(page)


async def test_sleeper_berths_are_named_by_level(page: Any, site: Site) -> None:
    day = tomorrow()
    Api.admin(site).open_sales(day)
    member = Api.new_member(site, "卧铺乘客")
    member.passenger("卧铺乘客")
    await login_in_browser(page, member.mobile, member.password)
    await page.goto(f"/book?train_code=Z13&date={day}&from=北京&to=上海&seat_class=hard_sleeper")
    await ready(page)
    await page.wait_for_selector("#seat-map .carriage.sleeper .seat.free")
    labels = (
        await page.locator("#seat-map .seat-row")
        .first.locator(".seat")
        .evaluate_all("(ss) => ss.map((s) => s.getAttribute('aria-label'))")
    )
    assert [label[-2:] for label in labels] == ["下铺", "中铺", "上铺", "下铺", "中铺", "上铺"]
    assert all(re.fullmatch(r"\d{2}车\d{2}号[上中下]铺", label) for label in labels), labels
    await page.locator("#seat-map .seat.free").first.click()
    assert re.search(r"\d{2}车\d{2}号[上中下]铺", await page.text_content("#book-passengers") or "")
    await snap(page, "book-sleeper-desktop")
