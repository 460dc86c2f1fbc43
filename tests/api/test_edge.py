"""What the guard does for every request, the fast paths included: the request id (header and log
lines), the language of error messages, text no store takes refused as 422 at the edge, and the
bound on requests worked on at once."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from typing import Any

import httpx
import pytest
import structlog
from starlette.types import Receive, Scope, Send

from railbook.api.middleware import GuardMiddleware
from tests.api.test_errors import assert_error_shape
from tests.support import add_passenger, admin, make_train_day, order_body, register, unique

# ---- X-Request-ID ----------------------------------------------------------------------------------


async def test_every_answer_carries_a_request_id(client: httpx.AsyncClient) -> None:
    m = await register(client)
    answers = [
        await client.get("/healthz"),
        await client.get("/api/v1/no-such-thing"),  # 404 from the router
        await client.delete("/healthz"),  # 405
        await client.get("/api/v1/me"),  # 401
        await client.get("/api/v1/me", headers=m["headers"]),
        await client.get("/api/v1/orders/no-such-order", headers=m["headers"]),  # fast read path
        await client.post("/api/v1/orders", json={"date": "x"}, headers=m["headers"]),  # fast path, 422
        await client.get("/openapi.json"),
        await client.get("/metrics"),
    ]
    ids = [r.headers.get("x-request-id") for r in answers]
    assert all(i and re.fullmatch(r"[0-9a-f]{32}", i) for i in ids), ids
    assert len(set(ids)) == len(ids)


async def test_a_sane_client_request_id_is_kept_and_another_replaced(client: httpx.AsyncClient) -> None:
    mine = "req-42.abc:DEF_7"
    assert (await client.get("/healthz", headers={"X-Request-ID": mine})).headers["x-request-id"] == mine
    for bad in ("x" * 129, "has space", "semi;colon", "<script>"):
        echoed = (await client.get("/healthz", headers={"X-Request-ID": bad})).headers["x-request-id"]
        assert echoed != bad and re.fullmatch(r"[0-9a-f]{32}", echoed)


async def test_the_fast_order_path_answers_with_the_request_id(client: httpx.AsyncClient) -> None:
    day = await make_train_day(client, await admin(client))
    m = await register(client)
    p = await add_passenger(client, m["headers"])
    headers = {**m["headers"], "X-Request-ID": "order-req-1"}
    r = await client.post("/api/v1/orders", json=order_body(day, [p]), headers=headers)
    assert r.status_code == 202, r.text
    assert r.headers["x-request-id"] == "order-req-1"
    polled = await client.get(
        f"/api/v1/orders/{r.json()['order_id']}", headers={**headers, "X-Request-ID": "poll-1"}
    )
    assert polled.status_code == 200 and polled.headers["x-request-id"] == "poll-1"


async def test_every_log_line_of_a_request_names_it() -> None:
    """Lines logged anywhere below the guard (here: the app and the guard's own outage line) carry the
    request's id; nothing of it is left bound once the request is answered."""
    log = structlog.get_logger("test")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        log.info("inside")
        raise ConnectionRefusedError(111, "Connection refused")

    transport = httpx.ASGITransport(app=GuardMiddleware(app))
    with structlog.testing.capture_logs(processors=[structlog.contextvars.merge_contextvars]) as lines:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            r = await http.get("/api/v1/anything", headers={"X-Request-ID": "trace-me"})
    assert_error_shape(r, 503, "UNAVAILABLE")
    assert r.headers["x-request-id"] == "trace-me"
    assert [line["event"] for line in lines] == ["inside", "store_unavailable"]
    assert all(line.get("request_id") == "trace-me" for line in lines), lines
    assert "request_id" not in structlog.contextvars.get_contextvars()


# ---- requests in flight -------------------------------------------------------------------------------


async def test_requests_past_the_bound_wait_their_turn_then_are_answered_busy() -> None:
    """With one turn taken, the next request waits for it and is served once it is free; one that
    waits longer than the bound is answered 503 SERVER_BUSY with Retry-After, in Chinese when asked;
    the probes never wait; a request refused at the edge gives back no turn it never took."""
    release, entered = asyncio.Event(), asyncio.Event()
    served: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/slow":
            entered.set()  # it holds the one turn
            await release.wait()
        served.append(scope["path"])
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    def guarded(wait_s: float) -> httpx.AsyncClient:
        guard = GuardMiddleware(app, max_in_flight=1, queue_wait_s=wait_s)
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=guard), base_url="http://t")

    async with guarded(0.1) as http:  # the one turn is never given back in time
        slow = asyncio.create_task(http.get("/slow"))
        await entered.wait()
        assert (await http.get("/healthz")).status_code == 204  # a probe does not wait for it
        busy = await http.get("/api/v1/me", headers={"Accept-Language": "zh-CN"})
        assert_error_shape(busy, 503, "SERVER_BUSY")
        assert busy.headers["retry-after"] == "1"
        assert busy.json()["error"]["message"] == "系统繁忙，请稍后重试。"
        release.set()
        assert (await slow).status_code == 204
    release.clear()
    entered.clear()
    served.clear()
    async with guarded(60) as http:  # the turn is given back well within the wait
        slow = asyncio.create_task(http.get("/slow"))
        await entered.wait()
        waiting = asyncio.create_task(http.get("/next"))
        await asyncio.sleep(0.05)
        assert served == []  # /next waits for the turn
        release.set()
        assert (await slow).status_code == 204 and (await waiting).status_code == 204
        assert served == ["/slow", "/next"]
        # Refused at the edge (NUL in the query) without a turn: the one turn is still there after.
        for _ in range(3):
            assert (await http.get("/x?q=%00")).status_code == 422
        assert (await http.get("/after")).status_code == 204


# ---- Accept-Language ---------------------------------------------------------------------------------


def _has_chinese(text: str) -> bool:
    return any("\u4e00" <= ch <= "\u9fff" for ch in text)


@pytest.mark.parametrize("language", ["zh-CN,zh;q=0.9,en;q=0.8", "zh", "ZH-tw"])
async def test_error_messages_follow_accept_language(client: httpx.AsyncClient, language: str) -> None:
    zh = {"Accept-Language": language}
    en = {"Accept-Language": "en-US,zh;q=0.5"}
    m = await register(client)
    cases: list[tuple[str, str, dict[str, Any], int, str]] = [
        ("GET", "/api/v1/no-such-thing", {}, 404, "NOT_FOUND"),
        ("DELETE", "/healthz", {}, 405, "METHOD_NOT_ALLOWED"),
        ("GET", "/api/v1/me", {}, 401, "UNAUTHORIZED"),
        ("POST", "/api/v1/auth/register", {"json": {"mobile": 1}}, 422, "VALIDATION_ERROR"),
        (
            "POST",
            "/api/v1/auth/login",
            {"json": {"mobile": "13900000001", "password": "nope-nope"}},
            401,
            "BAD_CREDENTIALS",
        ),
        ("GET", "/api/v1/orders/nope", {"headers": m["headers"]}, 404, "ORDER_NOT_FOUND"),  # fast read path
        ("POST", "/api/v1/orders", {"headers": m["headers"], "json": {}}, 422, "VALIDATION_ERROR"),
    ]
    for method, path, kwargs, status, code in cases:
        headers = kwargs.pop("headers", {})
        chinese = await client.request(method, path, headers={**headers, **zh}, **kwargs)
        english = await client.request(method, path, headers={**headers, **en}, **kwargs)
        zh_error = assert_error_shape(chinese, status, code)
        en_error = assert_error_shape(english, status, code)
        assert _has_chinese(zh_error["message"]), (path, zh_error)
        assert not _has_chinese(en_error["message"]), (path, en_error)
        assert zh_error["details"] == en_error["details"]


async def test_the_fast_order_path_refuses_in_chinese(client: httpx.AsyncClient) -> None:
    m = await register(client)
    day = await make_train_day(client, await admin(client))
    body = order_body(day, [999_999_999])  # not the member's passenger
    r = await client.post("/api/v1/orders", json=body, headers={**m["headers"], "Accept-Language": "zh-CN"})
    error = assert_error_shape(r, 404, "PASSENGER_NOT_FOUND")
    assert error["message"] == "乘车人不存在。"
    no_token = await client.post("/api/v1/orders", json=body, headers={"Accept-Language": "zh"})
    assert _has_chinese(assert_error_shape(no_token, 401, "UNAUTHORIZED")["message"])


# ---- text no store takes ---------------------------------------------------------------------------


async def test_nul_in_a_query_string_is_422(client: httpx.AsyncClient) -> None:
    headers = await admin(client)
    for path in ("/api/v1/admin/stations?q=~%00", "/api/v1/stations?q=%00", "/api/v1/stations?q=a%00b"):
        error = assert_error_shape(await client.get(path, headers=headers), 422, "VALIDATION_ERROR")
        assert error["details"]["fields"][0]["field"] == "query"


async def test_nul_in_a_path_parameter_is_422(client: httpx.AsyncClient) -> None:
    headers = await admin(client)
    m = await register(client)
    for path, h in (
        ("/api/v1/admin/trains/G%001", headers),
        ("/api/v1/orders/ab%00cd", m["headers"]),  # the fast read path
        ("/api/v1/trains/G%001/seat-map", {}),
    ):
        error = assert_error_shape(await client.get(path, headers=h), 422, "VALIDATION_ERROR")
        assert error["details"]["fields"][0]["field"] == "path"


async def _post_json(
    client: httpx.AsyncClient, path: str, body: dict[str, Any], headers: dict[str, str] | None = None
) -> httpx.Response:
    """POST ``body`` as ``json.dumps`` writes it: NUL and lone surrogates as ``\\u`` escapes."""
    return await client.post(
        path,
        content=json.dumps(body).encode(),
        headers={**(headers or {}), "content-type": "application/json"},
    )


@pytest.mark.parametrize(
    "text", ["a\x00b", "\ud800", "x\udfffy", "\ud83d"], ids=["nul", "high", "low", "half"]
)
async def test_nul_or_a_lone_surrogate_in_a_json_body_is_422(client: httpx.AsyncClient, text: str) -> None:
    m = await register(client)
    headers = await admin(client)
    day = await make_train_day(client, headers, days_ahead=2)
    body = {"mobile": "13912345678", "password": "pw-123456", "name": text}
    r = await _post_json(client, "/api/v1/auth/register", body)
    assert assert_error_shape(r, 422, "VALIDATION_ERROR")["details"]["fields"][0]["field"] == "body"
    order = order_body(day, [1])
    order["from"] = text
    r = await _post_json(client, "/api/v1/orders", order, m["headers"])  # the fast order path
    assert_error_shape(r, 422, "VALIDATION_ERROR")
    r = await _post_json(client, "/api/v1/admin/stations", {"name": text, "code": "ZZZ"}, headers)
    assert_error_shape(r, 422, "VALIDATION_ERROR")
    # A chunked body (no Content-Length) is checked whole, once its last chunk has arrived.
    chunks = [json.dumps(body).encode()[:20], json.dumps(body).encode()[20:]]

    async def stream() -> Any:
        for chunk in chunks:
            yield chunk

    r = await client.post(
        "/api/v1/auth/register", content=stream(), headers={"content-type": "application/json"}
    )
    assert_error_shape(r, 422, "VALIDATION_ERROR")


async def test_nul_in_a_form_body_is_422(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/api/v1/auth/login",
        content=b"mobile=139%00&password=x",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert_error_shape(r, 422, "VALIDATION_ERROR")


async def test_escaped_backslashes_and_surrogate_pairs_are_fine(client: httpx.AsyncClient) -> None:
    """``\\\\u0000`` is the text ``\\u0000`` and an escaped pair is one character: neither is refused."""
    headers = await admin(client)
    r = await client.get("/api/v1/admin/stations", params={"q": "\\u0000"}, headers=headers)
    assert r.status_code == 200, r.text
    password = "\\u0000 \U0001f600 pw"
    mobile = "139" + unique()[-8:].rjust(8, "0")
    body = {"mobile": mobile, "password": password, "name": "张三"}
    raw = json.dumps(body).encode()
    assert b"\\\\u0000" in raw and b"\\ud83d\\ude00" in raw
    r = await client.post("/api/v1/auth/register", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 201, r.text
    r = await _post_json(client, "/api/v1/auth/login", {"mobile": mobile, "password": password})
    assert r.status_code == 200, r.text


LOG_A_REQUEST = """
import asyncio, logging
import httpx, structlog
from railbook.api.middleware import GuardMiddleware
from railbook.config import Settings
from railbook.logs import configure_logging

settings = Settings(redis_url="redis://127.0.0.1:1/0", log_level="info")
configure_logging(settings.log_level, json=settings.json_logs)

async def app(scope, receive, send):
    structlog.get_logger("railbook.test").info("from_structlog")
    logging.getLogger("sqlalchemy.pool").warning("from_the_standard_library")
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})

async def main():
    transport = httpx.ASGITransport(app=GuardMiddleware(app))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        await http.get("/", headers={"X-Request-ID": "logged-1"})
    structlog.get_logger("railbook.test").info("after_the_request")

asyncio.run(main())
"""


def test_log_lines_are_json_in_distributed_mode_and_name_their_request() -> None:
    """Distributed settings log JSON by default; structlog's and the standard library's lines of a
    request both carry its id, and a line after it none."""
    done = subprocess.run(
        [sys.executable, "-c", LOG_A_REQUEST],
        env={"PYTHONPATH": ":".join(sys.path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    by_event = {line["event"]: line for line in lines}
    assert by_event["from_structlog"]["request_id"] == "logged-1"
    assert by_event["from_the_standard_library"]["request_id"] == "logged-1"
    assert by_event["from_the_standard_library"]["level"] == "warning"
    assert "request_id" not in by_event["after_the_request"]
    assert all("timestamp" in line for line in lines)
