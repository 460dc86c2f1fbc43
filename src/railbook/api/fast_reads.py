"""The fast path of ``GET /api/v1/orders/{order_id}``: answered from the ASGI layer, beside the
FastAPI route (``routers.orders.order``) that answers everything it leaves."""

from __future__ import annotations

from starlette.types import Receive, Scope, Send

from railbook.api.deps import decode_token
from railbook.api.errors import domain_error_response
from railbook.api.routers.orders import json_response, order_json
from railbook.bootstrap import Container
from railbook.domain.errors import DomainError, Unauthorized
from railbook.services.booking.read_model import get_order

ORDER_PATH_PREFIX = "/api/v1/orders/"
# The route's path template: the metrics label FastAPI's routing would give the request.
ORDER_ROUTE = "/api/v1/orders/{order_id}"


def polled_order_id(scope: Scope) -> str | None:
    """The order id of a ``GET /api/v1/orders/{order_id}`` the fast path answers, else None.

    The match is the route's own: one non-empty path segment (the ``str`` convertor, ``[^/]+``) on
    the decoded path; the query string is ignored, as the route declares no query parameter. A
    request under a ``root_path`` (a mounted app) is left to the framework's routing."""
    if scope["method"] != "GET" or scope.get("root_path"):
        return None
    path: str = scope["path"]
    if not path.startswith(ORDER_PATH_PREFIX):
        return None
    order_id = path[len(ORDER_PATH_PREFIX) :]
    if not order_id or "/" in order_id:
        return None
    return order_id


async def read_order(scope: Scope, order_id: str, receive: Receive, send: Send) -> None:
    """``GET /api/v1/orders/{order_id}`` straight from the ASGI guard: passengers poll it every
    second while their order is queued. The same bearer check, use case and serialiser as the
    route, so its answers (200, 401, 404) are the route's byte for byte."""
    container: Container = scope["app"].state.container
    try:
        principal = decode_token(container, _bearer_token(scope))
        view = await get_order(container, member_id=principal.member_id, order_id=order_id[:64])
    except DomainError as exc:
        await domain_error_response(exc)(scope, receive, send)
        return
    await json_response(order_json(view))(scope, receive, send)


def _bearer_token(scope: Scope) -> str:
    # The first Authorization header, as ``request.headers.get`` reads it in ``current_principal``.
    header = ""
    for name, value in scope["headers"]:
        if name == b"authorization":
            header = value.decode("latin-1")
            break
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Log in first: an `Authorization: Bearer <token>` header is required.")
    return token.strip()
