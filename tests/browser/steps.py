"""Steps the browser tests share: set-up through the HTTP API (fast, not under test there), the
steps a person takes in the page, the phone-width check and screenshots kept as test artefacts."""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from railbook.domain.identity import compose_id_card
from railbook.kit.clock import beijing_today
from tests.live_server import Site
from tests.support import wait_until

from .conftest import ADMIN_MOBILE, ADMIN_PASSWORD, ARTEFACTS

_rng = random.Random()


def fresh_mobile() -> str:
    return "135" + f"{_rng.randrange(10**8):08d}"


def fresh_id_card(born: dt.date | None = None) -> str:
    birth = born or dt.date(1970, 1, 1) + dt.timedelta(days=_rng.randrange(15000))
    return compose_id_card("320102", birth, _rng.randrange(1000))


def child_id_card() -> str:
    return fresh_id_card(beijing_today() - dt.timedelta(days=365 * 8 + _rng.randrange(300)))


def tomorrow() -> str:
    return (beijing_today() + dt.timedelta(days=1)).isoformat()


async def ready(page: Any) -> None:
    """The page script has finished its start-up (header and first loads)."""
    await page.wait_for_selector("body[data-ready='1']", state="attached")


async def snap(page: Any, name: str) -> Path:
    """A full-page screenshot kept under ARTEFACTS (build/browser-artefacts unless set)."""
    path = ARTEFACTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)  # Playwright creates the folders
    return path


async def assert_no_sideways_scroll(page: Any) -> None:
    """Nothing makes the page wider than the window (at phone width: no horizontal scrolling)."""
    widths = await page.evaluate(
        "() => [document.documentElement.scrollWidth, window.innerWidth, document.body.scrollWidth]"
    )
    assert widths[0] <= widths[1] and widths[2] <= widths[1], f"page wider than the window: {widths}"


async def page_text(page: Any) -> str:
    return str(await page.evaluate("() => document.body.innerText"))


RAW_STATES = ("SUCCESS", "UNPAID", "PARTLY_REFUNDED", "PENDING", "REFUNDED", "CHANGED", "CANCEL", "PAID")


async def assert_all_chinese_states(page: Any) -> None:
    text = await page_text(page)
    raw = [word for word in RAW_STATES if word in text]
    assert not raw, f"raw states shown to the passenger: {raw}"


class Api:
    """A member (or the admin) talking to the live site over HTTP, for set-up only."""

    def __init__(self, site: Site, mobile: str, password: str) -> None:
        self.http = httpx.Client(base_url=site.url, timeout=30, headers={"Accept-Language": "zh-CN"})
        self.mobile = mobile
        self.password = password
        r = self.http.post("/api/v1/auth/login", json={"mobile": mobile, "password": password})
        assert r.status_code == 200, r.text
        self.token = r.json()["access_token"]
        self.http.headers["Authorization"] = f"Bearer {self.token}"

    @classmethod
    def admin(cls, site: Site) -> Api:
        return cls(site, ADMIN_MOBILE, ADMIN_PASSWORD)

    @classmethod
    def new_member(cls, site: Site, name: str = "测试乘客") -> Api:
        mobile, password = fresh_mobile(), "browser-pass-1"
        r = httpx.post(
            f"{site.url}/api/v1/auth/register", json={"mobile": mobile, "password": password, "name": name}
        )
        assert r.status_code == 201, r.text
        return cls(site, mobile, password)

    def call(self, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
        r = self.http.request(method, path, json=body)
        assert r.status_code == expect, f"{method} {path}: {r.status_code} {r.text}"
        return r.json() if r.content else None

    def passenger(self, name: str, kind: str = "adult", id_card: str | None = None) -> int:
        card = id_card or (child_id_card() if kind == "child" else fresh_id_card())
        body = {"name": name, "id_card": card, "type": kind}
        return int(self.call("POST", "/api/v1/passengers", body, 201)["passenger_id"])

    async def wait_order(self, order_id: str) -> dict[str, Any]:
        def placed() -> dict[str, Any] | None:
            order: dict[str, Any] = self.call("GET", f"/api/v1/orders/{order_id}")
            return None if order["status"] in ("INIT", "PENDING") else order

        return await wait_until(placed, timeout=30, what=f"order {order_id} to be placed")

    async def book(
        self, train: str, date: str, from_: str, to: str, people: list[int], seat_class: str
    ) -> dict[str, Any]:
        body = {
            "date": date,
            "train_code": train,
            "from": from_,
            "to": to,
            "passengers": [{"passenger_id": p, "seat_class": seat_class} for p in people],
        }
        order = await self.wait_order(self.call("POST", "/api/v1/orders", body, 202)["order_id"])
        assert order["status"] == "SUCCESS", order
        return order

    def pay(self, order_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.call("POST", f"/api/v1/orders/{order_id}/pay", {"method": "mock"})
        return result

    def open_sales(self, date: str) -> None:
        self.call("POST", "/api/v1/admin/sales/open", {"date": date})


async def login_in_browser(page: Any, mobile: str, password: str, next_path: str = "/") -> None:
    await page.goto(f"/login?next={next_path}")
    await ready(page)
    await page.fill("#mobile", mobile)
    await page.fill("#password", password)
    await page.click("#login-form button[type=submit]")
    await page.wait_for_url(lambda url: urlsplit(url).path == next_path)
    await ready(page)
