"""Browser fixtures: a real ``railbook serve`` (embedded SQLite, sample timetable) in a subprocess,
driven by Debian's Chromium through Playwright. Nothing is downloaded; a missing Chromium fails loudly."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.live_server import Site, serve

from .in_process import InProcessSite, serve_in_process

CHROMIUM = Path(os.environ.get("RAILBOOK_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
ADMIN_MOBILE = "13800000009"
ADMIN_PASSWORD = "browser-admin-1"


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """``railbook serve`` on a free port with a fresh SQLite file and the sample data, ready on /healthz."""
    workdir = tmp_path_factory.mktemp("site")
    with serve(
        workdir,
        {
            "RAILBOOK_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'rb.db'}",
            "RAILBOOK_DATA_DIR": str(workdir),
            "RAILBOOK_ADMIN_MOBILE": ADMIN_MOBILE,
            "RAILBOOK_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "RAILBOOK_ARGON2_TIME_COST": "1",
            "RAILBOOK_ARGON2_MEMORY_COST": "1024",
            "RAILBOOK_RATE_LIMITS": "off",
            "RAILBOOK_SALE_DAYS_AHEAD": "2",  # today and tomorrow: a quick start, and all the tests need
            "RAILBOOK_LOAD_SAMPLE_DATA": "true",
        },
    ) as running:
        yield running


@pytest.fixture(scope="session")
def guarded_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessSite]:
    """A second site with rate limits ON (so the captcha challenges are on), served from this process
    so that a test can read a captcha's answer from the server's store. One order a minute per member
    passes without a captcha."""
    with serve_in_process(
        tmp_path_factory.mktemp("guarded"),
        admin_mobile=ADMIN_MOBILE,
        admin_password=ADMIN_PASSWORD,
        argon2_time_cost=1,
        argon2_memory_cost=1024,
        rate_limits="on",
        captcha_orders_per_minute=1,
        sale_days_ahead=2,
        load_sample_data=True,
    ) as running:
        yield running


@pytest.fixture(scope="session")
def chromium_path() -> Path:
    """Debian's Chromium. Its absence is a failure with the fix in the message, never a skip."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"Chromium not found at {CHROMIUM}: install it with `apt-get install -y chromium` "
            "(or run scripts/browser); the browser tests need a real browser."
        )
    return CHROMIUM


@pytest.fixture(scope="session")
async def browser(chromium_path: Path) -> AsyncIterator[Any]:
    """Headless Chromium driven by Playwright (no browser download: the Debian binary)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(
            executable_path=str(chromium_path), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield chromium
        finally:
            await chromium.close()


ARTEFACTS = Path(os.environ.get("RAILBOOK_BROWSER_ARTEFACTS", "build/browser-artefacts"))
PHONE = {"width": 390, "height": 844}


async def _tab(
    browser: Any, site: Site, request: pytest.FixtureRequest, **options: Any
) -> AsyncIterator[Any]:
    """A fresh browser context (empty localStorage); page errors fail the test, and the last screen
    of every test is kept as an artefact (``last-<test>.png``) to see what it saw."""
    context = await browser.new_context(base_url=site.url, locale="zh-CN", **options)
    context.set_default_timeout(15_000)
    tab = await context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield tab
    finally:
        try:
            await tab.screenshot(path=str(ARTEFACTS / f"last-{request.node.name}.png"), full_page=True)
        except Exception:
            pass
        finally:
            await context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture
async def page(browser: Any, site: Site, request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """A desktop-sized tab."""
    async for tab in _tab(browser, site, request, viewport={"width": 1280, "height": 900}):
        yield tab


@pytest.fixture
async def abroad(browser: Any, site: Site, request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """A desktop-sized tab of a browser in Honolulu (UTC−10), whose calendar date is Beijing's (UTC+8)
    only from 06:00 to 14:00 local time."""
    async for tab in _tab(
        browser, site, request, viewport={"width": 1280, "height": 900}, timezone_id="Pacific/Honolulu"
    ):
        yield tab


@pytest.fixture
async def guarded_page(
    browser: Any, guarded_site: InProcessSite, request: pytest.FixtureRequest
) -> AsyncIterator[Any]:
    """A desktop-sized tab on the site with rate limits on."""
    async for tab in _tab(browser, guarded_site, request, viewport={"width": 1280, "height": 900}):
        yield tab


@pytest.fixture
async def phone(browser: Any, site: Site, request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """A phone-sized tab (390×844, touch, the device's pixel ratio)."""
    async for tab in _tab(
        browser, site, request, viewport=PHONE, is_mobile=True, has_touch=True, device_scale_factor=2
    ):
        yield tab


@pytest.fixture
async def guarded_phone(
    browser: Any, guarded_site: InProcessSite, request: pytest.FixtureRequest
) -> AsyncIterator[Any]:
    """A phone-sized tab on the site with rate limits on."""
    async for tab in _tab(
        browser, guarded_site, request, viewport=PHONE, is_mobile=True, has_touch=True, device_scale_factor=2
    ):
        yield tab
