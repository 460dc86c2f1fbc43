"""Domain exceptions: one class per stable UPPER_SNAKE code, grouped by kind.

The kinds (``NotFound``, ``Conflict``, ``InvalidInput``, ...) say what went wrong in the domain's
terms; ``railbook.api.errors`` maps each kind to an HTTP status and builds the error envelope, in
that one place. Nothing here knows about HTTP.
"""

from __future__ import annotations

from typing import Any, ClassVar


class DomainError(Exception):
    """Base of every expected, user-facing failure."""

    code: ClassVar[str] = "DOMAIN_ERROR"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details or {}


class Retryable(DomainError):
    """A refusal the client should retry after ``retry_after`` seconds."""

    def __init__(self, message: str, *, retry_after: int = 1, details: dict[str, Any] | None = None):
        super().__init__(message, details=details)
        self.retry_after = retry_after


# ---- kinds ---------------------------------------------------------------------------------------


class NotFound(DomainError):
    code = "NOT_FOUND"


class Conflict(DomainError):
    code = "CONFLICT"


class InvalidInput(DomainError):
    """Semantically invalid input (the request parsed, but it makes no sense)."""

    code = "VALIDATION_ERROR"


class Unauthorized(DomainError):
    code = "UNAUTHORIZED"


class Forbidden(DomainError):
    code = "FORBIDDEN"


class TooManyRequests(Retryable):
    """A per-client limit: the client is asking too often."""

    code = "RATE_LIMITED"


class Unavailable(Retryable):
    """A store we need is unreachable, or system-wide protection sheds load."""

    code = "UNAVAILABLE"


# ---- not found -----------------------------------------------------------------------------------


class StationNotFound(NotFound):
    code = "STATION_NOT_FOUND"


class TrainNotFound(NotFound):
    code = "TRAIN_NOT_FOUND"


class TrainDayNotFound(NotFound):
    code = "TRAIN_DAY_NOT_FOUND"


class DayNotLoaded(NotFound):
    """The allocator does not hold this train-day (not open, or lost with the cache)."""

    code = "DAY_NOT_LOADED"


class StopNotFound(NotFound):
    code = "STOP_NOT_FOUND"


class PassengerNotFound(NotFound):
    code = "PASSENGER_NOT_FOUND"


class OrderNotFound(NotFound):
    code = "ORDER_NOT_FOUND"


class WaitlistNotFound(NotFound):
    code = "WAITLIST_NOT_FOUND"


class TicketNotFound(NotFound):
    code = "TICKET_NOT_FOUND"


class BlockNotFound(NotFound):
    code = "BLOCK_NOT_FOUND"


# ---- conflicts -----------------------------------------------------------------------------------


class SoldOut(Conflict):
    code = "SOLD_OUT"


class SeatTaken(SoldOut):
    """The seat asked for by name is held by someone else."""

    code = "SEAT_TAKEN"


class NotSoldOut(Conflict):
    code = "NOT_SOLD_OUT"


class DuplicateOrder(Conflict):
    code = "DUPLICATE_ORDER"


class MobileTaken(Conflict):
    code = "MOBILE_TAKEN"


class PassengerExists(Conflict):
    code = "PASSENGER_EXISTS"


class PassengerLimit(Conflict):
    code = "PASSENGER_LIMIT"


class StationExists(Conflict):
    code = "STATION_EXISTS"


class TrainExists(Conflict):
    code = "TRAIN_EXISTS"


class TrainOnSale(Conflict):
    code = "TRAIN_ON_SALE"


class NotPayable(Conflict):
    code = "NOT_PAYABLE"


class PayDeadlinePassed(Conflict):
    code = "PAY_DEADLINE_PASSED"


class NotCancellable(Conflict):
    code = "NOT_CANCELLABLE"


class NotRefundable(Conflict):
    code = "NOT_REFUNDABLE"


class NotChangeable(Conflict):
    code = "NOT_CHANGEABLE"


class ChangeInProgress(Conflict):
    code = "CHANGE_IN_PROGRESS"


class ChangeAfterDeparture(Conflict):
    code = "CHANGE_AFTER_DEPARTURE"


class WaitlistLimit(Conflict):
    code = "WAITLIST_LIMIT"


class TrainDeparted(Conflict):
    """Online sale of this journey has closed: the train has left the boarding station, or leaves
    within the sale cut-off."""

    code = "TRAIN_DEPARTED"


class TripConflict(Conflict):
    """One person, one seat at a time: the passenger already holds a ticket on this train-day or on
    a train whose journey overlaps this one."""

    code = "TRIP_CONFLICT"


class AlreadyChanged(Conflict):
    """A ticket that came from a change cannot be changed again."""

    code = "ALREADY_CHANGED"


class PassengerHasTickets(Conflict):
    """A passenger holding an unpaid or paid ticket for a journey not yet made cannot be removed."""

    code = "PASSENGER_HAS_TICKETS"


# ---- invalid input -------------------------------------------------------------------------------


class BadJourney(InvalidInput):
    code = "BAD_JOURNEY"


class SameStation(InvalidInput):
    code = "SAME_STATION"


class StationNotOnTrain(InvalidInput):
    code = "STATION_NOT_ON_TRAIN"


class DateNotOnSale(InvalidInput):
    code = "DATE_NOT_ON_SALE"


class BadSeatClass(InvalidInput):
    code = "BAD_SEAT_CLASS"


class SeatClassNotOnTrain(InvalidInput):
    code = "SEAT_CLASS_NOT_ON_TRAIN"


class BadSeatPref(InvalidInput):
    code = "BAD_SEAT_PREF"


class BadSeat(InvalidInput):
    code = "BAD_SEAT"


class BadPassengers(InvalidInput):
    code = "BAD_PASSENGERS"


class BadPaymentMethod(InvalidInput):
    code = "BAD_PAYMENT_METHOD"


class BadCallback(InvalidInput):
    code = "BAD_CALLBACK"


class AmountMismatch(InvalidInput):
    code = "AMOUNT_MISMATCH"


class NotAChild(InvalidInput):
    """A child fare for someone 14 or older on the travel date."""

    code = "NOT_A_CHILD"


class BadCursor(InvalidInput):
    code = "BAD_CURSOR"


class IdempotencyKeyReused(InvalidInput):
    code = "IDEMPOTENCY_KEY_REUSED"


# ---- authentication and load ---------------------------------------------------------------------


class BadCredentials(Unauthorized):
    code = "BAD_CREDENTIALS"


class SaleBusy(Unavailable):
    """Every sale token of the train-day is taken: orders in flight are bounded."""

    code = "SALE_BUSY"


class LoginBusy(Unavailable):
    code = "LOGIN_BUSY"


class ServerBusy(Unavailable):
    """The server process has waited its longest for a turn to work on the request (system-wide
    protection: ``MAX_IN_FLIGHT``)."""

    code = "SERVER_BUSY"


class Blocked(Forbidden):
    """The mobile or address is on the admin blocklist."""

    code = "BLOCKED"


class CaptchaRequired(Forbidden):
    """Anti-bot protection asks for a captcha answer before this is done."""

    code = "CAPTCHA_REQUIRED"


def _subclasses(cls: type[DomainError]) -> list[type[DomainError]]:
    found = []
    for sub in cls.__subclasses__():
        found.append(sub)
        found.extend(_subclasses(sub))
    return found


def error_for_code(code: str) -> type[DomainError]:
    """The class of a code that crossed a boundary as text (a Lua script's refusal, say);
    ``InvalidInput`` for a code no class claims."""
    for cls in _subclasses(DomainError):
        if cls.code == code:
            return cls
    return InvalidInput
