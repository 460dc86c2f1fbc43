"""Domain exceptions: each carries a stable UPPER_SNAKE code; HTTP mapping lives in api/errors.py only."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """Base of every expected, user-facing failure."""

    code: str = "DOMAIN_ERROR"
    status: int = 400  # HTTP status hint; the API layer maps it in one place

    def __init__(self, message: str, *, code: str | None = None, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details: dict[str, Any] = details or {}


class NotFound(DomainError):
    code = "NOT_FOUND"
    status = 404


class Conflict(DomainError):
    code = "CONFLICT"
    status = 409


class InvalidInput(DomainError):
    """Semantically invalid input (the request parsed, but it makes no sense)."""

    code = "VALIDATION_ERROR"
    status = 422


class Unauthorized(DomainError):
    code = "UNAUTHORIZED"
    status = 401


class Forbidden(DomainError):
    code = "FORBIDDEN"
    status = 403


class SoldOut(Conflict):
    code = "SOLD_OUT"


class TooManyRequests(DomainError):
    code = "RATE_LIMITED"
    status = 429

    def __init__(
        self,
        message: str,
        *,
        retry_after: int = 1,
        code: str | None = None,
        details: dict[str, Any] | None = None,
    ):
        super().__init__(message, code=code, details=details)
        self.retry_after = retry_after


class Unavailable(DomainError):
    """A store we need is unreachable, or system-wide protection sheds load: 503 + Retry-After."""

    code = "UNAVAILABLE"
    status = 503

    def __init__(
        self,
        message: str,
        *,
        retry_after: int = 1,
        code: str | None = None,
        details: dict[str, Any] | None = None,
    ):
        super().__init__(message, code=code, details=details)
        self.retry_after = retry_after
