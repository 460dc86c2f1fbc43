"""The OpenAPI document: FastAPI's, completed with every error each operation can answer.

FastAPI describes what a route returns when it succeeds; the errors come from elsewhere (the guard in
front of every request, the dependencies, the use cases), so they are added here, each with the error
envelope's schema (``api.errors.ErrorEnvelope``) and the codes it carries:

- 401 where a bearer token is needed (the ``current_principal`` dependency);
- 404 where the path names a resource, and on admin routes (others are told nothing is there);
- 400, 413 and 422 where a body is read (a JSON body that is not UTF-8, which FastAPI refuses before
  validation; the guard's size limit; validation, NUL and lone surrogates), 422 wherever there is
  any input (query, path, header, body);
- 503 + ``Retry-After`` wherever a store is asked (the guard answers a store outage so) and wherever
  a request may wait for its turn (``SERVER_BUSY``: all but the probes), 429 + ``Retry-After`` where
  per-client limits apply;
- the conflicts (409), refusals (403) and domain codes of each operation, from ``ROUTE_ERRORS``.

Routes are read from the app, so a new route gets the structural answers without a word here.
Content types are declared as answered: ``/metrics`` text, pages HTML, a 204 no body at all.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts

from railbook.api.deps import current_principal, require_admin
from railbook.api.errors import HTTP_CODES, ErrorEnvelope, status_of_kind
from railbook.api.middleware import UNQUEUED_PATHS
from railbook.domain import errors as e
from railbook.domain.fees import RefundAfterDeparture
from railbook.services.after_sale.payment import BadSignature

ENVELOPE_REF = "#/components/schemas/ErrorEnvelope"
RETRY_AFTER = {
    "Retry-After": {"description": "Seconds to wait before trying again.", "schema": {"type": "integer"}}
}
# Operations that ask no store: the guard's outage answer never concerns them.
NO_STORE = {("GET", "/healthz"), ("GET", "/metrics")}

Operation = tuple[str, str]
_ORDER_INPUT = (
    e.StationNotFound,
    e.TrainNotFound,
    e.PassengerNotFound,
    e.DateNotOnSale,
    e.BadJourney,
    e.SameStation,
    e.BadSeatClass,
    e.SeatClassNotOnTrain,
    e.BadSeatPref,
    e.BadSeat,
    e.BadPassengers,
    e.NotAChild,
)
_SALE = (e.SoldOut, e.SeatTaken, e.DuplicateOrder, e.TripConflict, e.TrainDeparted, e.SaleBusy)
_ANTI_BOT = (e.Blocked, e.CaptchaRequired, e.TooManyRequests)

# What each operation can refuse beyond the structural answers above (its use case's codes). Every
# operation under /api/ is listed, an empty entry for one that refuses nothing of its own, so a new
# route is looked at here (a test checks it; the API tests check every answer against the document).
ROUTE_ERRORS: dict[Operation, tuple[type[e.DomainError], ...]] = {
    ("GET", "/api/v1/trains/search"): (e.StationNotFound, e.SameStation, e.DateNotOnSale),
    ("GET", "/api/v1/trains/transfers"): (e.StationNotFound, e.SameStation, e.DateNotOnSale),
    ("GET", "/api/v1/trains/{code}/stops"): (e.TrainNotFound,),
    ("GET", "/api/v1/stations"): (),  # a prefix that is not printable text: VALIDATION_ERROR only
    ("GET", "/api/v1/trains/{code}/seat-map"): (
        e.TrainNotFound,
        e.StationNotFound,
        e.DateNotOnSale,
        e.SeatClassNotOnTrain,
        e.StationNotOnTrain,
        e.BadJourney,
    ),
    ("POST", "/api/v1/auth/register"): (e.MobileTaken, *_ANTI_BOT),
    ("POST", "/api/v1/auth/login"): (e.BadCredentials, e.LoginBusy, *_ANTI_BOT),
    ("GET", "/api/v1/captcha"): (e.LoginBusy,),  # too many images being drawn at once
    ("GET", "/api/v1/me"): (),
    ("GET", "/api/v1/passengers"): (),
    ("POST", "/api/v1/passengers"): (e.PassengerExists, e.PassengerLimit),
    ("DELETE", "/api/v1/passengers/{passenger_id}"): (e.PassengerNotFound, e.PassengerHasTickets),
    ("POST", "/api/v1/orders"): (*_SALE, *_ORDER_INPUT, *_ANTI_BOT, e.IdempotencyKeyReused),
    ("GET", "/api/v1/orders"): (e.BadCursor,),
    ("GET", "/api/v1/tickets"): (),
    ("GET", "/api/v1/waitlist"): (),
    ("GET", "/api/v1/orders/{order_id}"): (e.OrderNotFound,),
    ("POST", "/api/v1/orders/{order_id}/pay"): (
        e.OrderNotFound,
        e.NotPayable,
        e.PayDeadlinePassed,
        e.BadPaymentMethod,
        e.IdempotencyKeyReused,
    ),
    ("POST", "/api/v1/orders/{order_id}/cancel"): (e.OrderNotFound, e.NotCancellable),
    ("POST", "/api/v1/tickets/{ticket_id}/refund"): (
        e.TicketNotFound,
        e.StopNotFound,
        e.NotRefundable,
        RefundAfterDeparture,
    ),
    # The change places an order (``place_order``): its sale refusals, input checks and rate limits.
    ("POST", "/api/v1/tickets/{ticket_id}/change"): (
        e.TicketNotFound,
        e.NotChangeable,
        e.AlreadyChanged,
        e.ChangeInProgress,
        e.ChangeAfterDeparture,
        *_SALE,
        *_ORDER_INPUT,
        e.TooManyRequests,
    ),
    # Joining checks the journey as an order does, but neither fares nor trips: a trip conflict
    # found when the entry is filled is the entry's ``error_code``, never this answer.
    ("POST", "/api/v1/waitlist"): (
        e.StationNotFound,
        e.TrainNotFound,
        e.PassengerNotFound,
        e.DateNotOnSale,
        e.BadJourney,
        e.TrainDeparted,
        e.NotSoldOut,
        e.DuplicateOrder,
        e.WaitlistLimit,
    ),
    ("DELETE", "/api/v1/waitlist/{waitlist_id}"): (e.WaitlistNotFound, e.NotCancellable),
    ("POST", "/api/v1/payments/mock/callback"): (
        BadSignature,
        e.BadCallback,
        e.AmountMismatch,
        e.OrderNotFound,
    ),
    ("POST", "/api/v1/admin/stations"): (e.StationExists,),
    ("GET", "/api/v1/admin/stations"): (),
    ("GET", "/api/v1/admin/trains"): (),
    ("POST", "/api/v1/admin/trains"): (e.TrainExists, e.StationNotFound),
    ("GET", "/api/v1/admin/trains/{code}"): (e.TrainNotFound,),
    ("PUT", "/api/v1/admin/trains/{code}"): (e.TrainNotFound, e.StationNotFound),
    ("DELETE", "/api/v1/admin/trains/{code}"): (e.TrainNotFound, e.TrainOnSale),
    ("POST", "/api/v1/admin/sales/open"): (e.DateNotOnSale,),
    ("GET", "/api/v1/admin/trains/{code}/inventory"): (e.TrainNotFound, e.TrainDayNotFound, e.DateNotOnSale),
    ("POST", "/api/v1/admin/blocklist"): (),  # a bad mobile, address or reason: VALIDATION_ERROR only
    ("GET", "/api/v1/admin/blocklist"): (),
    ("DELETE", "/api/v1/admin/blocklist/{block_id}"): (e.BlockNotFound,),
}


def install_openapi(app: FastAPI) -> None:
    """Complete the app's OpenAPI document (FastAPI's, regenerated when routes change) as described
    in the module docstring."""
    generate: Callable[[], dict[str, Any]] = app.openapi
    completed: set[int] = set()

    def openapi() -> dict[str, Any]:
        schema = generate()
        if id(schema) not in completed:
            complete(schema, app)
            completed.add(id(schema))
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def complete(schema: dict[str, Any], app: FastAPI) -> None:
    """Add the error answers and content types of every operation of ``app`` to ``schema``."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    envelope = ErrorEnvelope.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(envelope.pop("$defs", {}))
    components["ErrorEnvelope"] = envelope
    for method, path, route in api_operations(app):
        operation = schema.get("paths", {}).get(path, {}).get(method.lower())
        if operation is None:
            continue
        responses = operation.setdefault("responses", {})
        for status, codes in error_statuses(method, path, route).items():
            _declare(responses, status, codes)
        for status, answer in responses.items():
            if status == "204":
                answer.pop("content", None)
    paths = schema.get("paths", {})
    if "/metrics" in paths:
        ok = paths["/metrics"]["get"]["responses"]["200"]
        ok["content"] = {"text/plain": {"schema": {"type": "string"}}}
    for unused in ("HTTPValidationError", "ValidationError"):  # FastAPI's 422 body, not ours
        if f'"#/components/schemas/{unused}"' not in json.dumps(schema):
            components.pop(unused, None)


def api_operations(app: FastAPI) -> Iterable[tuple[str, str, Any]]:
    """(method, path template, route) of every operation in the document."""
    for context in iter_route_contexts(app.routes):
        if not isinstance(context.original_route, APIRoute) or not context.include_in_schema:
            continue
        for method in sorted(context.methods or ()):
            yield method, str(context.path_format), context


def _calls(dependant: Any) -> set[Any]:
    found = set()
    for sub in dependant.dependencies:
        found.add(sub.call)
        found |= _calls(sub)
    return found


def error_statuses(method: str, path: str, route: Any) -> dict[int, list[str]]:
    """Each error status this operation can answer, with the codes it carries there."""
    dependant = route.dependant
    calls = _calls(dependant)
    statuses: dict[int, list[str]] = {}

    def add(status: int, code: str) -> None:
        codes = statuses.setdefault(status, [])
        if code not in codes:
            codes.append(code)

    extra = (route.openapi_extra or {}).get("parameters", [])
    has_body = route.body_field is not None
    if has_body or dependant.query_params or dependant.path_params or dependant.header_params or extra:
        add(422, "VALIDATION_ERROR")
    if has_body:
        add(400, "BAD_REQUEST")
        add(413, "PAYLOAD_TOO_LARGE")
    if current_principal in calls:
        add(401, "UNAUTHORIZED")
    if require_admin in calls:
        add(404, "NOT_FOUND")
    if dependant.path_params:
        add(404, "NOT_FOUND")
    for cls in ROUTE_ERRORS.get((method, path), ()):
        add(status_of_kind(cls), cls.code)
    if (method, path) not in NO_STORE:
        add(503, "UNAVAILABLE")
    if path not in UNQUEUED_PATHS:
        add(503, e.ServerBusy.code)
    return statuses


def _declare(responses: dict[str, Any], status: int, codes: list[str]) -> None:
    """The answer ``status`` in the error envelope, described by its codes (with those a route's own
    ``responses`` named)."""
    entry = responses.setdefault(str(status), {})
    named = [c for c in _CODE.findall(entry.get("description", "")) if c not in codes]
    entry["description"] = ", ".join([*codes, *named]) or HTTP_CODES.get(status, str(status))
    entry["content"] = {"application/json": {"schema": {"$ref": ENVELOPE_REF}}}
    if status in (429, 503):
        entry["headers"] = RETRY_AFTER


_CODE = re.compile(r"\b[A-Z][A-Z_]*[A-Z]\b")
