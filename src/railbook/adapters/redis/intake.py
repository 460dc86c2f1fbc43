"""The order intake over Redis: the guard's admission and the allocation in one round trip, and on a
single Redis the passengers' trip claims too."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import structlog

from railbook.adapters.redis.allocator import RedisAllocator
from railbook.adapters.redis.autopipe import raise_errors
from railbook.adapters.redis.cluster import is_cluster
from railbook.adapters.redis.protection import RedisOrderGuard
from railbook.adapters.redis.trips import CLAIM_TRIP_LUA, PreparedClaim, RedisTrips
from railbook.domain.seating import AllocationRequest
from railbook.services.booking.trip_ports import TripRequest, TripsNotHeld
from railbook.services.ports import Admission, AdmissionRefused, Allocation

log = structlog.get_logger(__name__)


class RedisOrderIntake:
    """``OrderIntake``: the admission prepared by the guard rides in the allocator's round trip, and the
    seats are taken only if it admitted the order. On a single Redis the trip claims go first in the
    same round trip, and the admission holds back unless every trip is held (ADMIT_LUA): an accepted
    order costs one round trip, as before the trips were checked. A cluster keeps a passenger's
    trips in another slot than the day's keys, so no script can check both: there the claim is a
    round trip of its own (``claims_trips`` False)."""

    def __init__(self, guard: RedisOrderGuard, allocator: RedisAllocator, trips: RedisTrips) -> None:
        self.guard = guard
        self.allocator = allocator
        self.trips = trips
        self.claims_trips = not is_cluster(guard.redis)

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
        """One round trip: the trip claims (with ``trips``), the admission, then the allocation and the
        order's queue message."""
        claim = self.trips.prepare_claim(trips) if trips is not None else None
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
            trip_keys=claim.gate_keys if claim is not None else (),
        )
        if claim is not None:
            admission = self._behind_claim(admission, claim, order_id)
        return await self.allocator.allocate(
            train_code, date, request, order_id=order_id, message=message, admission=admission
        )

    def _behind_claim(self, admission: Admission, claim: PreparedClaim, order_id: str) -> Admission:
        """The admission with the trip claims in front: their replies read first. A refusal for want
        of a trip carries what the claims did (the caller settles the clash); any other refusal gives
        back the trips they held first (best effort: one left behind heals at its next clash)."""
        n = len(claim.commands)

        async def conclude(replies: Sequence[Any]) -> None:
            claimed = claim.read(raise_errors(replies[:n]))
            try:
                await admission.conclude(replies[n:])
            except AdmissionRefused as refused:
                if isinstance(refused.reason, TripsNotHeld):
                    refused.reason.claim = claimed
                elif claimed.held:
                    try:
                        await self.trips.drop([(order_id, claimed.held)])
                    except Exception as exc:
                        log.warning("trips_not_dropped", error=repr(exc)[:200], order_id=order_id)
                raise

        commands = [*claim.commands, *admission.commands]
        return Admission(commands, [CLAIM_TRIP_LUA, *admission.scripts], admission.tokens_key, conclude)
