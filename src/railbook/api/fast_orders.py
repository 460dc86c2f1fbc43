"""The fast paths of the two busiest POSTs of a sale, ``POST /api/v1/orders`` and
``POST /api/v1/orders/{order_id}/pay``: answered from the ASGI layer, beside the FastAPI routes
(``routers.orders``, ``routers.payments``) that answer everything they leave."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TypeVar

from pydantic import BaseModel, ValidationError
from starlette.types import Message, Receive, Scope, Send

from railbook.api.deps import Principal, decode_token
from railbook.api.errors import domain_error_response
from railbook.api.routers.orders import accept_order, json_response, order_json
from railbook.api.routers.payments import pay_order
from railbook.api.schemas_orders import OrderIn
from railbook.api.schemas_payments import PayIn
from railbook.bootstrap import Container
from railbook.domain.errors import DomainError, Unauthorized

ORDERS_PATH = "/api/v1/orders"
PAY_SUFFIX = "/pay"
# The pay route's path template: the metrics label FastAPI's routing would give the request.
PAY_ROUTE = "/api/v1/orders/{order_id}/pay"

Body = TypeVar("Body", bound=BaseModel)


def paid_order_id(scope: Scope) -> str | None:
    """The order id of a ``POST /api/v1/orders/{order_id}/pay`` the fast path takes, else None: one
    non-empty path segment (the route's ``str`` convertor) on the decoded path, outside a mounted app."""
    if scope["method"] != "POST" or scope.get("root_path"):
        return None
    path: str = scope["path"]
    if not path.startswith(ORDERS_PATH + "/") or not path.endswith(PAY_SUFFIX):
        return None
    order_id = path[len(ORDERS_PATH) + 1 : -len(PAY_SUFFIX)]
    if not order_id or "/" in order_id:
        return None
    return order_id


async def direct_order(scope: Scope, receive: Receive, send: Send) -> Receive | None:
    """``POST /api/v1/orders`` straight from the ASGI guard (see ``_direct``): 202 with the order id."""

    async def answer(body: OrderIn, key: str | None, principal: Principal, container: Container) -> None:
        client = scope.get("client")
        accepted = await accept_order(body, client[0] if client else "", principal, container, key)
        text = b'{"order_id":"%s","status":"%s"}' % (accepted.order_id.encode(), accepted.status.encode())
        await send(
            {
                "type": "http.response.start",
                "status": 202,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(text))],
            }
        )
        await send({"type": "http.response.body", "body": text})

    return await _direct(scope, receive, send, OrderIn, answer)


async def direct_pay(scope: Scope, order_id: str, receive: Receive, send: Send) -> Receive | None:
    """``POST /api/v1/orders/{order_id}/pay`` straight from the ASGI guard (see ``_direct``): 200
    with the order as paid. Every passenger who booked pays within minutes of the crowd."""

    async def answer(body: PayIn, key: str | None, principal: Principal, container: Container) -> None:
        view = await pay_order(order_id, body, principal, container, key)
        await json_response(order_json(view))(scope, receive, send)

    return await _direct(scope, receive, send, PayIn, answer)


async def _direct(
    scope: Scope,
    receive: Receive,
    send: Send,
    model: type[Body],
    answer: Callable[[Body, str | None, Principal, Container], Awaitable[None]],
) -> Receive | None:
    """A JSON body that validates as ``model`` (validated as FastAPI does: ``json.loads`` then
    python-mode validation), an ``Idempotency-Key`` within the route's 128 characters, and a bearer
    token go straight to ``answer``, past the routing and dependency layers that cost as much as the
    use case; its answers, and domain refusals in the error shape, are those of the route. Anything
    else (another content type, a body or header that does not validate) returns a ``receive``
    replaying the body for the FastAPI route, so 422 answers, their details and the OpenAPI document
    are exactly FastAPI's. Returns None when it answered."""
    headers = dict(scope["headers"])
    key_raw = headers.get(b"idempotency-key")
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return receive  # the client went away: let the framework see it
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    raw = b"".join(chunks)
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": raw, "more_body": False}

    media_type = headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower()
    if media_type != b"application/json" or (key_raw is not None and len(key_raw) > 128):
        return replay
    try:
        body = model.model_validate(json.loads(raw))
        key = key_raw.decode("latin-1") if key_raw is not None else None
    except (ValueError, ValidationError):
        return replay
    container: Container = scope["app"].state.container
    try:
        scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("Log in first: an `Authorization: Bearer <token>` header is required.")
        await answer(body, key, decode_token(container, token.strip()), container)
    except DomainError as exc:
        await domain_error_response(exc)(scope, receive, send)
    return None
