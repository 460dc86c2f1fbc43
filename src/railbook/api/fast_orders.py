"""The fast path of ``POST /api/v1/orders``: answered from the ASGI layer, beside the FastAPI route
(``routers.orders``) that answers everything it leaves."""

from __future__ import annotations

import json

from pydantic import ValidationError
from starlette.types import Message, Receive, Scope, Send

from railbook.api.deps import decode_token
from railbook.api.errors import domain_error_response
from railbook.api.routers.orders import accept_order
from railbook.api.schemas_orders import OrderIn
from railbook.bootstrap import Container
from railbook.domain.errors import DomainError, Unauthorized

ORDERS_PATH = "/api/v1/orders"


async def direct_order(scope: Scope, receive: Receive, send: Send) -> Receive | None:
    """``POST /api/v1/orders`` straight from the ASGI guard, the busiest endpoint in a sale.

    A JSON body that validates as ``OrderIn`` (the same model, validated the same way as FastAPI
    does: ``json.loads`` then python-mode validation) with a bearer token goes straight to the use
    case, past the routing and middleware layers that cost as much as the order itself; its answers
    (202, and domain refusals in the error shape) are those of the route. Anything else (another
    content type, a body or header that does not validate) returns a ``receive`` replaying the body
    for the FastAPI route, so 422 answers, their details and the OpenAPI document are exactly
    FastAPI's. Returns None when it answered."""
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
        body = OrderIn.model_validate(json.loads(raw))
        key = key_raw.decode("latin-1") if key_raw is not None else None
    except (ValueError, ValidationError):
        return replay
    container: Container = scope["app"].state.container
    try:
        scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("Log in first: an `Authorization: Bearer <token>` header is required.")
        principal = decode_token(container, token.strip())
        client = scope.get("client")
        accepted = await accept_order(body, client[0] if client else "", principal, container, key)
    except DomainError as exc:
        await domain_error_response(exc)(scope, receive, send)
        return None
    answer = b'{"order_id":"%s","status":"%s"}' % (accepted.order_id.encode(), accepted.status.encode())
    await send(
        {
            "type": "http.response.start",
            "status": 202,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(answer))],
        }
    )
    await send({"type": "http.response.body", "body": answer})
    return None
