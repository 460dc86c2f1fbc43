"""The order state machine: exactly the transitions of the table, nothing else."""

from __future__ import annotations

import itertools

import pytest

from railbook.domain.errors import Conflict, DomainError
from railbook.domain.order_state import (
    FINAL_ORDER_STATUSES,
    TERMINAL_ORDER_STATUSES,
    IllegalTransition,
    OrderStatus,
    can_transition,
    transition,
)

ALLOWED = {
    ("INIT", "PENDING"),
    ("INIT", "EMPTY"),
    ("INIT", "FAILURE"),
    ("PENDING", "SUCCESS"),
    ("PENDING", "FAILURE"),
    ("PENDING", "EMPTY"),
    ("SUCCESS", "CANCEL"),
}


@pytest.mark.parametrize(("current", "new"), list(itertools.product(list(OrderStatus), repeat=2)))
def test_every_pair_follows_the_table(current: OrderStatus, new: OrderStatus) -> None:
    if (current.value, new.value) in ALLOWED:
        assert transition(current, new) is new
    else:
        with pytest.raises(IllegalTransition) as err:
            transition(current, new)
        assert err.value.code == "ILLEGAL_TRANSITION" and isinstance(err.value, Conflict)
        assert err.value.details == {"from": current.value, "to": new.value}


def test_illegal_transition_is_a_domain_error() -> None:
    assert issubclass(IllegalTransition, DomainError)


def test_unknown_states_never_transition() -> None:
    assert not can_transition("PAID", "SUCCESS")
    assert not can_transition("INIT", "DONE")
    with pytest.raises(IllegalTransition):
        transition("BOGUS", "PENDING")


def test_final_and_terminal_states() -> None:
    assert {s.value for s in TERMINAL_ORDER_STATUSES} == {"FAILURE", "EMPTY", "CANCEL"}
    assert OrderStatus.SUCCESS in FINAL_ORDER_STATUSES and OrderStatus.PENDING not in FINAL_ORDER_STATUSES
    for state in TERMINAL_ORDER_STATUSES:
        assert not any(can_transition(state, other) for other in OrderStatus)
