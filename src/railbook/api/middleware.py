"""The ASGI guard in front of every request, the fast paths included: one pure ASGI layer (no
``BaseHTTPMiddleware``: no task, no stream per request) that

- names the request: the client's ``X-Request-ID`` when it is sane (at most 128 characters of
  ``[A-Za-z0-9._:@/+=-]``), else a new one; it is bound in structlog's context, so every log line of
  the request carries it, and sent back on every answer;
- notes the language of error messages (``Accept-Language``: ``zh…`` means Chinese);
- refuses at the edge what no store would take: bodies over ``MAX_BODY_BYTES`` (413, before they
  are read whole), and NUL characters or lone surrogates in the path, the query string or a JSON or
  form body (422 ``VALIDATION_ERROR``): PostgreSQL refuses NUL in text, and neither it nor Redis can
  encode half a surrogate pair, so these would otherwise surface deep inside as a 500;
- bounds the requests the process works on at once (``InFlight``): the rest wait their turn, and
  one that waited too long is answered 503 ``SERVER_BUSY`` with ``Retry-After``;
- turns any escaped exception into the error shape (503 + Retry-After for a store outage);
- records the HTTP metrics.

Its cost per request is a few dictionary look-ups, two context-variable sets and, for a body that
carries ``\\u`` escapes of NUL or of a surrogate, one regular-expression pass over it.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from structlog.contextvars import bind_contextvars, reset_contextvars

from railbook.api.errors import (
    domain_error_response,
    error_response,
    prefer_chinese,
    unexpected_error_response,
)
from railbook.api.fast_orders import ORDERS_PATH, PAY_ROUTE, direct_order, direct_pay, paid_order_id
from railbook.api.fast_reads import ORDER_ROUTE, polled_order_id, read_order
from railbook.domain.errors import ServerBusy
from railbook.metrics import HTTP_LATENCY, HTTP_REQUESTS

MAX_BODY_BYTES = 256 * 1024
REQUEST_ID_HEADER = b"x-request-id"
_BODILESS = frozenset({"GET", "HEAD"})
_SANE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:@/+=-]{1,128}")

# A JSON escape: a valid surrogate pair (group 1), NUL or half a pair (group 2), or any other one.
_JSON_ESCAPE = re.compile(
    rb"\\(?:(u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2})|(u0000|u[dD][89a-fA-F][0-9a-fA-F]{2})|.)",
    re.DOTALL,
)


# New ids: this process's random prefix and a counter (32 hex digits, unique across processes and
# restarts without a system call per request).
_ID_PREFIX = os.urandom(8).hex()
_id_counter = itertools.count(int.from_bytes(os.urandom(4), "big"))


def request_id_of(sent: bytes | None) -> str:
    """The client's request id when it is sane, else a new one (32 hex digits)."""
    if sent is not None and _SANE_REQUEST_ID.fullmatch(sent):
        return sent.decode("ascii")
    return f"{_ID_PREFIX}{next(_id_counter):016x}"


def bad_json_text(body: bytes) -> bool:
    """True when a JSON body escapes NUL or half a surrogate pair in one of its strings (a raw NUL or
    control character is not JSON at all and is refused by the parser)."""
    if b"\\u0000" not in body and b"\\ud" not in body and b"\\uD" not in body:
        return False
    return any(m.group(2) for m in _JSON_ESCAPE.finditer(body))


def bad_form_text(body: bytes) -> bool:
    """True when a form body (or a query string) carries a NUL, raw or percent-encoded."""
    return b"%00" in body or b"\x00" in body


# Probes answer at once, however busy the process: a load balancer must tell busy from dead.
UNQUEUED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


class InFlight:
    """At most ``limit`` requests of a process worked on at once; the next ones wait for a turn, first
    come first served, for at most ``wait_s``.

    Why: an event loop shares its CPU among every request it has started. Under a crowd of a thousand
    connections each turn of the loop runs hundreds of requests' steps, so a transaction that needs
    four round trips holds its pooled connection for four such turns, the pool runs dry and requests
    time out waiting for a connection (answered 503, then sent again: work done twice). With a bound
    the loop's turns stay short, a transaction's connection is back within milliseconds, and the
    waiting costs nothing but a place in the queue. What changes is who waits: a cheap request waits
    its turn like any other, where sharing would have finished it early, but no request waits
    without bound behind a thousand others (the tail). BENCHMARKS.md has the figures of a crowd with
    and without it (``railbook bench flash-sale --setting MAX_IN_FLIGHT=0``)."""

    def __init__(self, limit: int, wait_s: float) -> None:
        self.free = asyncio.Semaphore(limit)
        self.wait_s = wait_s

    async def enter(self) -> None:
        """Take a turn, waiting for one when all are taken; ServerBusy after ``wait_s``."""
        if not self.free.locked():
            await self.free.acquire()
            return
        try:
            async with asyncio.timeout(self.wait_s):
                await self.free.acquire()
        except TimeoutError:
            raise ServerBusy("The server is busy; retry shortly.", retry_after=1) from None

    def leave(self) -> None:
        self.free.release()


class GuardMiddleware:
    """The guard described in the module docstring; the fast paths of ``POST /api/v1/orders``,
    ``GET /api/v1/orders/{id}`` and ``POST /api/v1/orders/{id}/pay`` are dispatched from here, after
    the request is named and checked. ``max_in_flight`` (0: no bound) and ``queue_wait_s``: see
    ``InFlight``."""

    def __init__(self, app: ASGIApp, max_in_flight: int = 0, queue_wait_s: float = 10.0) -> None:
        self.app = app
        self.in_flight = InFlight(max_in_flight, queue_wait_s) if max_in_flight > 0 else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = dict(scope.get("headers") or [])
        request_id = request_id_of(headers.get(REQUEST_ID_HEADER))
        bound = bind_contextvars(request_id=request_id)
        language = prefer_chinese(headers.get(b"accept-language"))
        exchange = _Exchange(scope, send, request_id)
        route_label = ""
        turn = None  # the InFlight this request holds a turn of, once it has one
        try:
            refusal = _refusal(scope, headers)
            if refusal is not None:
                await exchange.answer(refusal)
                return
            if self.in_flight is not None and scope["path"] not in UNQUEUED_PATHS:
                try:
                    await self.in_flight.enter()
                except ServerBusy as busy:
                    await exchange.answer(domain_error_response(busy))
                    return
                turn = self.in_flight
            method = scope["method"]
            # No route reads the body of a GET: the search and order polls go by as they are.
            checked = receive if method in _BODILESS else exchange.checked_receive(receive, headers)
            if method == "POST" and scope["path"] == ORDERS_PATH:
                route_label = ORDERS_PATH
                rest = await direct_order(scope, checked, exchange.send)
                if rest is not None and not exchange.muted:
                    await self.app(scope, rest, exchange.send)
            elif (order_id := polled_order_id(scope)) is not None:
                route_label = ORDER_ROUTE
                await read_order(scope, order_id, checked, exchange.send)
            elif (order_id := paid_order_id(scope)) is not None:
                route_label = PAY_ROUTE
                rest = await direct_pay(scope, order_id, checked, exchange.send)
                if rest is not None and not exchange.muted:
                    await self.app(scope, rest, exchange.send)
            else:
                await self.app(scope, checked, exchange.send)
        except Exception as exc:
            if exchange.started:
                raise
            await exchange.answer(unexpected_error_response(exc, scope.get("path", "")))
        finally:
            if turn is not None:
                turn.leave()
            path = route_label or getattr(scope.get("route"), "path", "unmatched")
            method = scope.get("method", "")
            HTTP_REQUESTS.labels(method, path, str(exchange.status)).inc()
            HTTP_LATENCY.labels(method, path).observe(time.perf_counter() - started)
            if language is not None:
                language.var.reset(language)
            reset_contextvars(**bound)


class _Exchange:
    """One request's answer as it goes out: its status, whether it has started, the request id header
    on it; and, once the guard answered by itself, the app's own messages dropped."""

    __slots__ = ("id_header", "muted", "raw_send", "scope", "started", "status")

    def __init__(self, scope: Scope, send: Send, request_id: str) -> None:
        self.scope = scope
        self.raw_send = send
        self.id_header = (REQUEST_ID_HEADER, request_id.encode("ascii"))
        self.status = 500
        self.started = False
        self.muted = False

    async def send(self, message: Message) -> None:
        if self.muted:
            return
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.started = True
            message["headers"] = [*message.get("headers", ()), self.id_header]
        await self.raw_send(message)

    async def answer(self, response: Any) -> None:
        """The guard's own answer (an ASGI response); whatever the app sends afterwards is dropped."""
        await response(self.scope, _no_receive, self.send)
        self.muted = True

    def checked_receive(self, receive: Receive, headers: dict[bytes, bytes]) -> Receive:
        """``receive`` counting the body against the limit and, for JSON and form bodies, checking the
        whole body's text once its last chunk has arrived. A body over the limit or with bad text is
        answered here (413, 422) and the app is told the client went away: a framework turns an error
        raised from ``receive`` into an answer of its own (400), so none is raised."""
        check = _text_check(headers.get(b"content-type", b""))
        received = 0
        chunks: list[bytes] = []

        async def checked() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] != "http.request" or self.muted:
                return message
            chunk = message.get("body", b"")
            received += len(chunk)
            refusal = None
            if received > MAX_BODY_BYTES:
                refusal = error_response(413, "PAYLOAD_TOO_LARGE", "Body too large.")
            elif check is not None:
                if message.get("more_body", False):
                    chunks.append(chunk)
                elif check(b"".join((*chunks, chunk)) if chunks else chunk):
                    refusal = _bad_text_response("body")
            if refusal is None:
                return message
            if not self.started:
                await self.answer(refusal)
            self.muted = True
            return {"type": "http.disconnect"}

        return checked


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


def _refusal(scope: Scope, headers: dict[bytes, bytes]) -> Any:
    """An answer given before the request is read: an oversized body, bad text in the path or query."""
    length = headers.get(b"content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
        return error_response(413, "PAYLOAD_TOO_LARGE", f"Bodies are limited to {MAX_BODY_BYTES} bytes.")
    if "\x00" in scope["path"]:
        return _bad_text_response("path")
    query: bytes = scope.get("query_string", b"")
    if query and bad_form_text(query):
        return _bad_text_response("query")
    return None


def _text_check(content_type: bytes) -> Any:
    """The check of a body of this type: JSON as FastAPI reads it (no type, ``application/json`` or
    ``application/*+json``), forms; None for other types (their bytes reach no store as text)."""
    media = content_type.split(b";", 1)[0].strip().lower()
    if (
        not media
        or media == b"application/json"
        or (media.startswith(b"application/") and media.endswith(b"+json"))
    ):
        return bad_json_text
    if media == b"application/x-www-form-urlencoded":
        return bad_form_text
    return None


def _bad_text_response(where: str) -> Any:
    return error_response(
        422,
        "VALIDATION_ERROR",
        "The request carries a NUL character or half a surrogate pair.",
        {"fields": [{"field": where, "message": "NUL or unpaired surrogate", "type": "bad_text"}]},
    )
