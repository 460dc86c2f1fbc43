"""The order intake in process: the admission costs no round trip, so it simply comes first."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from railbook.adapters.embedded.allocator import InProcessAllocator
from railbook.adapters.embedded.queue import MemoryOrderGuard
from railbook.domain.seating import AllocationRequest
from railbook.services.booking.trip_ports import TripRequest
from railbook.services.ports import AdmissionRefused, Allocation


class EmbeddedOrderIntake:
    """``OrderIntake``: the memory guard admits the order, then the in-process allocator seats it."""

    # A claim in process costs no round trip: it stays the trip guard's own call, before this one.
    claims_trips = False

    def __init__(self, guard: MemoryOrderGuard, allocator: InProcessAllocator) -> None:
        self.guard = guard
        self.allocator = allocator

    async def admit_and_allocate(
        self,
        train_code: str,
        date: dt.date,
        request: AllocationRequest,
        *,
        member_id: int,
        passenger_ids: Sequence[int],
        order_id: str,
        tokens: int,
        record: Mapping[str, Any],
        record_json: str,
        checked: bool,
        message: Mapping[str, str],
        trips: TripRequest | None = None,
    ) -> Allocation:
        """Admit (a refusal changes nothing and is raised as AdmissionRefused), then allocate."""
        try:
            await self.guard.admit_order(
                train_code,
                date,
                member_id,
                passenger_ids,
                order_id,
                tokens,
                record=record,
                idempotency=None,
                checked=checked,
                record_json=record_json,
            )
        except Exception as exc:
            raise AdmissionRefused(exc) from None
        return await self.allocator.allocate(train_code, date, request, order_id=order_id, message=message)
