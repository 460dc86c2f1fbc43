"""Captcha in a real Chromium, on a site with rate limits on: after five wrong passwords the login
form shows a captcha (picture, answer, 换一张) and logs in with the right answer; an order the
anti-bot check stops is sent again with a captcha from the booking form."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from tests.support import wait_until

from .in_process import InProcessSite
from .steps import Api, login_in_browser, ready, snap, tomorrow

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # a live server and a real browser

PNG_DATA_URL = "data:image/png;base64,"


async def submit_login(page: Any) -> Any:
    """Press 登录 and return the API's answer to it."""
    async with page.expect_response(lambda r: r.url.endswith("/api/v1/auth/login")) as answer:
        await page.click("#login-form button[type=submit]")
    return await answer.value


async def shown_captcha(page: Any) -> str:
    """The id of the captcha on show, once its picture is there."""
    await page.wait_for_selector("#captcha-box:not([hidden]) img.captcha-image[src^='data:image/png']")
    captcha_id = await page.get_attribute("#captcha-box", "data-captcha-id")
    assert captcha_id
    return captcha_id


async def test_login_asks_for_a_captcha_after_five_wrong_passwords(
    guarded_page: Any, guarded_site: InProcessSite
) -> None:
    page = guarded_page
    member = Api.new_member(guarded_site, "验证码乘客")
    await page.goto("/login")
    await ready(page)
    assert await page.is_hidden("#captcha-box")
    await page.fill("#mobile", member.mobile)
    for _ in range(5):
        await page.fill("#password", "wrong-password-1")
        assert (await submit_login(page)).status == 401
        await page.wait_for_selector("#error[data-code='BAD_CREDENTIALS']")
        assert await page.is_hidden("#captcha-box")

    # The sixth try, right password or not, is asked for a captcha: picture, answer field, 换一张.
    await page.fill("#password", member.password)
    assert (await submit_login(page)).status == 403
    first = await shown_captcha(page)
    assert await page.get_attribute("#error", "data-code") == "CAPTCHA_REQUIRED"
    beside = page.locator("#captcha-box .field-error")
    assert "登录失败次数过多" in (await beside.text_content() or "")
    assert await page.is_visible("#captcha-answer")
    await snap(page, "login-captcha-desktop")

    await page.click("#captcha-box .captcha-refresh")
    await page.wait_for_function(
        f"() => document.querySelector('#captcha-box').dataset.captchaId !== {first!r}"
    )
    second = await shown_captcha(page)

    # A wrong answer: refused beside the field, and a new picture for the next try.
    answer = await guarded_site.captcha_answer(second)
    assert answer
    await page.fill("#captcha-answer", "2222" if answer != "2222" else "3333")
    assert (await submit_login(page)).status == 403
    await page.wait_for_function(
        f"() => document.querySelector('#captcha-box').dataset.captchaId !== {second!r}"
    )
    third = await shown_captcha(page)
    assert "验证码不正确" in (await beside.text_content() or "")

    # The right answer (sent as typed, in lower case) logs in.
    answer = await guarded_site.captcha_answer(third)
    assert answer
    await page.fill("#captcha-answer", answer.lower())
    assert (await submit_login(page)).status == 200
    await page.wait_for_url(re.compile(r"/$"))
    await ready(page)
    assert await page.text_content("#whoami") == f"验证码乘客（{member.mobile}）"


async def test_an_order_asked_for_a_captcha_is_sent_again_with_one(
    guarded_page: Any, guarded_site: InProcessSite
) -> None:
    page = guarded_page
    day = tomorrow()
    Api.admin(guarded_site).open_sales(day)
    member = Api.new_member(guarded_site, "快手乘客")
    rider = member.passenger("快手乘客")
    other = member.passenger("快手同行")
    await login_in_browser(page, member.mobile, member.password)
    await page.goto(f"/book?train_code=G3&date={day}&from=北京南&to=上海虹桥&seat_class=second")
    await ready(page)
    row = page.locator(f"#book-passengers tbody tr[data-passenger-id='{rider}']")
    assert await row.locator("input.pick").is_checked()

    # One order this minute passes; the next one of the same minute needs a captcha. Both inside
    # one minute: start early in a minute (the count is kept per clock minute).
    await wait_until(lambda: time.time() % 60 < 40, timeout=30, what="an early second of a minute")
    await member.book("G1", day, "北京南", "上海虹桥", [other], "second")

    async with page.expect_response(lambda r: r.url.endswith("/api/v1/orders")) as refused:
        await page.click("#book-submit")
    assert (await refused.value).status == 403
    captcha_id = await shown_captcha(page)
    assert await page.get_attribute("#error", "data-code") == "CAPTCHA_REQUIRED"
    assert "下单过于频繁" in (await page.text_content("#captcha-box .field-error") or "")
    await snap(page, "book-captcha-desktop")

    answer = await guarded_site.captcha_answer(captcha_id)
    assert answer
    await page.fill("#captcha-answer", answer)
    await page.click("#book-submit")
    await page.wait_for_url(re.compile(r"/orders/[^/]+$"))
    await page.wait_for_selector("#order-status[data-state='unpaid']", timeout=30_000)
