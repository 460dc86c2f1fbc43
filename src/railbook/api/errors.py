"""The one place where failures become HTTP answers, all in the contract's error shape:
``{"error": {"code", "message", "details"}}``. Never a bare 500 for a store outage: 503 + Retry-After.

The ``message`` follows the request's ``Accept-Language`` (``zh…``: the Chinese sentence of the code,
``api.messages_zh``; otherwise the English one); the ``code`` never changes. The guard notes the
language in a context variable, so every way an envelope is built (handlers, fast paths, the guard
itself) answers in it without passing the request along."""

from __future__ import annotations

import re
from contextvars import ContextVar, Token
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from railbook.adapters.outage import is_store_outage
from railbook.api.messages_zh import MESSAGES_ZH
from railbook.domain.errors import (
    Conflict,
    DomainError,
    Forbidden,
    InvalidInput,
    NotFound,
    Retryable,
    TooManyRequests,
    Unauthorized,
    Unavailable,
)

log = structlog.get_logger(__name__)


def allowed_methods(request: Request) -> str:
    """Every method the API serves at this path, from its OpenAPI document (Starlette's own 405
    names only the first route whose path matched, while several routes share a path, one per
    method)."""
    table: list[tuple[re.Pattern[str], str]] | None = getattr(request.app.state, "allowed_methods", None)
    if table is None:
        table = [
            (
                re.compile("^" + re.sub(r"\\\{[^}/]+\\\}", "[^/]+", re.escape(path)) + "$"),
                ", ".join(sorted(m.upper() for m in operations)),
            )
            for path, operations in request.app.openapi().get("paths", {}).items()
        ]
        request.app.state.allowed_methods = table
    return next((methods for pattern, methods in table if pattern.match(request.url.path)), "")


HTTP_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    406: "NOT_ACCEPTABLE",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "VALIDATION_ERROR",
    429: "RATE_LIMITED",
    500: "INTERNAL_ERROR",
    503: "UNAVAILABLE",
}

# True while the request being answered asked for Chinese (set by the guard, per request).
_CHINESE: ContextVar[bool] = ContextVar("railbook_chinese", default=False)


def prefer_chinese(accept_language: bytes | None) -> Token[bool] | None:
    """Note that this request's error messages are Chinese when its ``Accept-Language`` starts with
    ``zh``; the token to reset afterwards, or None when nothing was set (English, the default)."""
    if accept_language is None or accept_language.lstrip()[:2].lower() != b"zh":
        return None
    return _CHINESE.set(True)


class ErrorBody(BaseModel):
    code: str = Field(
        description="Stable UPPER_SNAKE code, the same in every language.", examples=["SOLD_OUT"]
    )
    message: str = Field(description="Human-readable, in the language of `Accept-Language` (zh or en).")
    details: dict[str, Any] = Field(description="What the error concerns (fields, ids); may be empty.")


class ErrorEnvelope(BaseModel):
    """The body of every 4xx and 5xx answer."""

    error: ErrorBody


# A store that cannot answer: how long a client should wait before it tries again.
OUTAGE_RETRY_AFTER_S = 2


def error_response(
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """The error envelope and its headers, rendered once; also an ASGI app the guard sends as it is.
    ``message`` is the English text; a request that asked for Chinese gets its code's Chinese one."""
    if _CHINESE.get():
        message = MESSAGES_ZH.get(code, message)
    body = {"error": {"code": code, "message": message, "details": jsonable_encoder(details or {})}}
    return JSONResponse(body, status_code=status, headers=headers)


# Each kind of domain error and its HTTP status; a class not listed takes its nearest listed base's.
STATUS_OF_KIND: dict[type[DomainError], int] = {
    InvalidInput: 422,
    Unauthorized: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    TooManyRequests: 429,
    Unavailable: 503,
}


def status_of(exc: DomainError) -> int:
    """The HTTP status of a domain error: that of the first kind in its class's ancestry (400 if none)."""
    return status_of_kind(type(exc))


def status_of_kind(kind: type[DomainError]) -> int:
    """The HTTP status of a class of domain error (see ``status_of``)."""
    for cls in kind.__mro__:
        status = STATUS_OF_KIND.get(cls)
        if status is not None:
            return status
    return 400


def domain_error_response(exc: DomainError) -> JSONResponse:
    """A domain refusal: its status, code, message and details (Retry-After where it applies)."""
    headers = None
    if isinstance(exc, Retryable):
        headers = {"Retry-After": str(max(1, exc.retry_after))}
    return error_response(status_of(exc), exc.code, exc.message, exc.details, headers)


def unexpected_error_response(exc: Exception, path: str) -> JSONResponse:
    """An exception nothing else handled: 503 + Retry-After for a store outage, else a logged 500."""
    if is_store_outage(exc):
        log.warning("store_unavailable", path=path, error=repr(exc)[:300])
        return error_response(
            503,
            "UNAVAILABLE",
            "A store is unreachable; retry shortly.",
            None,
            {"Retry-After": str(OUTAGE_RETRY_AFTER_S)},
        )
    log.error("unhandled_error", path=path, exc_info=exc)
    return error_response(500, "INTERNAL_ERROR", "Internal error.")


def _validation_details(exc: RequestValidationError) -> dict[str, Any]:
    fields = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body",)]
        fields.append({"field": ".".join(loc), "message": err.get("msg", "invalid"), "type": err.get("type")})
    return {"fields": fields}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def _domain(_: Request, exc: DomainError) -> JSONResponse:
        return domain_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "VALIDATION_ERROR", "The request is not valid.", _validation_details(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = HTTP_CODES.get(exc.status_code, f"HTTP_{exc.status_code}")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ").capitalize()
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:
            headers = {**(headers or {}), "Allow": allowed_methods(request)}
        return error_response(exc.status_code, code, message, None, headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        return unexpected_error_response(exc, request.url.path)
