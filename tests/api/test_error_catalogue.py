"""The error catalogue: every domain error class has its own stable code and an HTTP status."""

from __future__ import annotations

import pytest

from railbook.api.errors import status_of
from railbook.domain import errors
from railbook.domain.errors import DomainError, error_for_code
from railbook.domain.order_state import IllegalTransition

ABSTRACT = {DomainError, errors.Retryable}
CLASSES = sorted(
    {c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, DomainError)} - ABSTRACT
    | {IllegalTransition},
    key=lambda c: c.__name__,
)
KINDS = {
    errors.InvalidInput: 422,
    errors.Unauthorized: 401,
    errors.Forbidden: 403,
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.TooManyRequests: 429,
    errors.Unavailable: 503,
}


def test_codes_are_unique_and_upper_snake() -> None:
    codes = [c.code for c in CLASSES]
    assert len(codes) == len(set(codes))
    assert all(code.replace("_", "").isalpha() and code.isupper() for code in codes)


@pytest.mark.parametrize("cls", CLASSES, ids=str)
def test_every_error_has_the_status_of_its_kind(cls: type[DomainError]) -> None:
    kind = next(k for k in cls.__mro__ if k in KINDS)
    assert status_of(cls("x")) == KINDS[kind]


def test_a_code_that_crossed_a_boundary_finds_its_class() -> None:
    assert error_for_code("SEAT_TAKEN") is errors.SeatTaken
    assert error_for_code("DAY_NOT_LOADED") is errors.DayNotLoaded
    assert error_for_code("NO_SUCH_CODE") is errors.InvalidInput
