"""The order intake over Redis: the guard's admission and the allocation in one round trip."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from railbook.adapters.redis.allocator import RedisAllocator
from railbook.adapters.redis.protection import RedisOrderGuard
from railbook.domain.seating import AllocationRequest
from railbook.services.ports import Allocation


class RedisOrderIntake:
    """``OrderIntake``: the admission prepared by the guard rides in the allocator's round trip, and the
    seats are taken only if it admitted the order."""

    def __init__(self, guard: RedisOrderGuard, allocator: RedisAllocator) -> None:
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
    ) -> Allocation:
        """One round trip: the admission, then the allocation and the order's queue message."""
        admission = self.guard.prepare_admission(
            train_code,
            date,
            member_id,
            passenger_ids,
            order_id,
            tokens,
            record=record,
            checked=checked,
            record_json=record_json,
        )
        return await self.allocator.allocate(
            train_code, date, request, order_id=order_id, message=message, admission=admission
        )
