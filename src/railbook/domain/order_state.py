"""Order, payment and ticket states, and the only transitions allowed between order states.

An order is accepted (``INIT``), queued (``PENDING``), then committed with its seats held
(``SUCCESS``), refused for lack of seats (``EMPTY``) or failed (``FAILURE``). A held order that
is cancelled or not paid in time becomes ``CANCEL``. A refund never changes the order state:
it moves ``payment_status`` to ``PARTLY_REFUNDED`` / ``REFUNDED`` and the tickets to ``REFUNDED``.
"""

from __future__ import annotations

from enum import StrEnum

from railbook.domain.errors import Conflict


class OrderStatus(StrEnum):
    INIT = "INIT"
    PENDING = "PENDING"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    EMPTY = "EMPTY"
    CANCEL = "CANCEL"


class PaymentStatus(StrEnum):
    UNPAID = "UNPAID"
    PAID = "PAID"
    REFUNDED = "REFUNDED"
    PARTLY_REFUNDED = "PARTLY_REFUNDED"


class TicketStatus(StrEnum):
    UNPAID = "UNPAID"
    PAID = "PAID"
    REFUNDED = "REFUNDED"
    CHANGED = "CHANGED"
    CANCELLED = "CANCELLED"


class ChangeStatus(StrEnum):
    """A ticket change: its new order placed (``PENDING``), settled (``DONE``) or given up."""

    PENDING = "PENDING"
    DONE = "DONE"
    ABANDONED = "ABANDONED"


# Tickets in these states hold their seat segments (the exclusion constraint covers exactly these).
ACTIVE_TICKET_STATUSES: frozenset[TicketStatus] = frozenset({TicketStatus.UNPAID, TicketStatus.PAID})

# The explicit transition table: every state change of an order goes through ``transition``.
TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.INIT: frozenset({OrderStatus.PENDING, OrderStatus.EMPTY, OrderStatus.FAILURE}),
    OrderStatus.PENDING: frozenset({OrderStatus.SUCCESS, OrderStatus.FAILURE, OrderStatus.EMPTY}),
    OrderStatus.SUCCESS: frozenset({OrderStatus.CANCEL}),
    OrderStatus.FAILURE: frozenset(),
    OrderStatus.EMPTY: frozenset(),
    OrderStatus.CANCEL: frozenset(),
}

# Out of the queue: the order path has given its answer (SUCCESS may still become CANCEL).
FINAL_ORDER_STATUSES: frozenset[OrderStatus] = frozenset(
    {OrderStatus.SUCCESS, OrderStatus.FAILURE, OrderStatus.EMPTY, OrderStatus.CANCEL}
)
# No transition leaves these.
TERMINAL_ORDER_STATUSES: frozenset[OrderStatus] = frozenset(s for s, nxt in TRANSITIONS.items() if not nxt)


class IllegalTransition(Conflict):
    """An order was asked to move to a state its current state cannot reach."""

    code = "ILLEGAL_TRANSITION"


def can_transition(current: str, new: str) -> bool:
    """Whether ``current → new`` is in the transition table (unknown states never are)."""
    try:
        return OrderStatus(new) in TRANSITIONS[OrderStatus(current)]
    except ValueError:
        return False


def transition(current: str, new: str) -> OrderStatus:
    """The new state, if the table allows reaching it from ``current``; IllegalTransition otherwise."""
    if not can_transition(current, new):
        raise IllegalTransition(
            f"An order in state {current} cannot become {new}.",
            details={"from": current, "to": new},
        )
    return OrderStatus(new)


__all__ = [
    "ACTIVE_TICKET_STATUSES",
    "FINAL_ORDER_STATUSES",
    "TERMINAL_ORDER_STATUSES",
    "TRANSITIONS",
    "IllegalTransition",
    "OrderStatus",
    "PaymentStatus",
    "TicketStatus",
    "can_transition",
    "transition",
]
