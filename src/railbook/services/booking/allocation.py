"""One allocator call on the accept path, its outcome known or not.

A call answered (seats, SOLD_OUT, a refused admission) is an outcome; a call that failed without an
answer (a timeout, a lost connection) may hide a script that ran, and is ``OutcomeUnknown`` so the
caller keeps the order's markers for the committer instead of giving anything back. A day the
allocator lacks (a restart, a cache loss) is loaded once and the call retried.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from railbook.domain.errors import DomainError, NotFound, SoldOut
from railbook.domain.seating import AllocationRequest, SeatAssignment
from railbook.services.booking.context import OrderContext
from railbook.services.booking.ports import TrainDay
from railbook.services.booking.trip_ports import TripRequest
from railbook.services.ports import AdmissionRefused


class OutcomeUnknown(Exception):
    """The allocator call failed without an answer: the script may or may not have run."""


@dataclass(frozen=True, slots=True)
class Admission:
    """What the intake admits an order without a key with (see ``OrderIntake.admit_and_allocate``)."""

    member_id: int
    passenger_ids: Sequence[int]
    order_id: str
    tokens: int
    record: Mapping[str, object]
    record_json: str
    checked: bool
    trips: TripRequest | None = None  # the trip claim to ride along (where the intake claims trips)


async def allocate(
    container: OrderContext,
    day: TrainDay,
    request: AllocationRequest,
    order_id: str,
    message: Mapping[str, str],
    admission: Admission | None = None,
) -> list[SeatAssignment]:
    """One allocator call (with the admission, through the intake); a day the allocator lacks (restart,
    cache loss) is loaded once, then retried (an admission that came with the first call admitted the
    order by then: it is not sent again)."""
    try:
        return await allocate_once(container, day, request, order_id, message, admission)
    except SoldOut:
        raise
    except NotFound as exc:
        if exc.code not in ("NOT_FOUND", "DAY_NOT_LOADED", "TRAIN_DAY_NOT_LOADED"):
            raise
        from railbook.services.sales.loading import ensure_day_loaded

        await ensure_day_loaded(container, day.train_code, day.date)
        return await allocate_once(container, day, request, order_id, message)


async def allocate_once(
    container: OrderContext,
    day: TrainDay,
    request: AllocationRequest,
    order_id: str,
    message: Mapping[str, str],
    admission: Admission | None = None,
) -> list[SeatAssignment]:
    """The allocator's answer, or OutcomeUnknown when the call failed without one (timeout, lost
    connection): a domain error or a refused admission is an answer, anything else may hide a
    script that ran."""
    try:
        if admission is None:
            return await container.allocator.allocate(
                day.train_code, day.date, request, order_id=order_id, message=message
            )
        return await container.intake.admit_and_allocate(
            day.train_code,
            day.date,
            request,
            member_id=admission.member_id,
            passenger_ids=admission.passenger_ids,
            order_id=order_id,
            tokens=admission.tokens,
            record=admission.record,
            record_json=admission.record_json,
            checked=admission.checked,
            message=message,
            trips=admission.trips,
        )
    except (DomainError, AdmissionRefused):
        raise
    except Exception as exc:
        raise OutcomeUnknown(str(exc)) from exc
