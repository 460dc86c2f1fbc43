"""Passenger and admin pages (server-rendered shells; the browser script talks to the JSON API)."""

from __future__ import annotations

from functools import cache
from importlib import metadata
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

router = APIRouter(include_in_schema=False)
WEB_DIR = Path(__file__).resolve().parents[2] / "web"

# Pages load only their own script and stylesheet; nothing inline, nothing from elsewhere.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@cache
def _templates() -> Jinja2Templates:
    """Built on first use, so importing the app reads no files."""
    return Jinja2Templates(directory=str(WEB_DIR / "templates"))


@cache
def _asset_version() -> str:
    """Appended to asset URLs so a new release is not served stale scripts from a browser cache."""
    try:
        return metadata.version("railbook")
    except metadata.PackageNotFoundError:
        return "dev"


def _sale_days(request: Request) -> int:
    """Days on sale (today first): the search page's date strip and the admin's date limits."""
    container = getattr(request.app.state, "container", None)
    return int(getattr(getattr(container, "settings", None), "sale_days_ahead", 15))


def _page(
    request: Request, template: str, page: str, title: str, nav: str | None = None, **context: object
) -> HTMLResponse:
    """A page shell; ``nav`` names the header link to mark (the page itself unless a section's)."""
    response = _templates().TemplateResponse(
        request,
        template,
        {
            "page": page,
            "nav": nav or page,
            "title": title,
            "version": _asset_version(),
            "sale_days": _sale_days(request),
            **context,
        },
    )
    response.headers.update(PAGE_HEADERS)
    return response


@router.get("/", response_class=HTMLResponse)
async def search_page(request: Request) -> HTMLResponse:
    """Search trains between two stations on a day."""
    return _page(request, "search.html", "search", "车票查询")


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request) -> HTMLResponse:
    return _page(request, "login.html", "login", "登录")


@router.get("/register", response_class=HTMLResponse)
async def register_page(request: Request) -> HTMLResponse:
    return _page(request, "register.html", "register", "注册")


@router.get("/passengers", response_class=HTMLResponse)
async def passengers_page(request: Request) -> HTMLResponse:
    return _page(request, "passengers.html", "passengers", "乘车人")


@router.get("/book", response_class=HTMLResponse)
async def book_page(request: Request) -> HTMLResponse:
    """Choose class, passengers and seats for one train found by search (all from the query string)."""
    return _page(request, "book.html", "book", "预订")


@router.get("/orders", response_class=HTMLResponse)
async def orders_page(request: Request) -> HTMLResponse:
    return _page(request, "orders.html", "orders", "我的订单")


@router.get("/orders/{order_id}", response_class=HTMLResponse)
async def order_page(request: Request, order_id: str) -> HTMLResponse:
    """One order: waits for the queue to place it, then pay or cancel."""
    return _page(request, "order.html", "order", "订单详情", order_id=order_id[:64])


@router.get("/tickets", response_class=HTMLResponse)
async def tickets_page(request: Request) -> HTMLResponse:
    """The member's tickets: refund (fee shown first), change to another train, change destination."""
    return _page(request, "tickets.html", "tickets", "我的车票")


@router.get("/waitlist", response_class=HTMLResponse)
async def waitlist_page(request: Request) -> HTMLResponse:
    """The member's waitlist (候补) entries, their deadlines, and cancelling one."""
    return _page(request, "waitlist.html", "waitlist", "候补订单")


@router.get("/admin", response_class=HTMLResponse)
async def admin_page(request: Request) -> HTMLResponse:
    """Stations, trains, opening sale days and a train-day's inventory (admins only; the API checks)."""
    return _page(request, "admin.html", "admin", "管理")


@router.get("/admin/blocklist", response_class=HTMLResponse)
async def blocklist_page(request: Request) -> HTMLResponse:
    """Blocked mobiles and client addresses: list, add (with a reason and an optional end), lift."""
    return _page(request, "blocklist.html", "blocklist", "黑名单", nav="admin")


def mount_static(app: FastAPI) -> None:
    app.mount("/static", StaticFiles(directory=WEB_DIR / "static"), name="static")
