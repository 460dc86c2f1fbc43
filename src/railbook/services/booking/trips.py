"""One person, one seat at a time: the trips a passenger holds, claimed on the accept path.

A journey occupies its passenger from the departure at ``from`` to the arrival at ``to``. An order is
accepted only if each of its passengers holds no other trip on the same train-day and none that
overlaps it in time (in flight, unpaid or paid). The check and the hold are one atomic step per
passenger in the trip guard (a Lua call on the passenger's own hash in Redis, an uninterrupted
method in process), so of two simultaneous orders for one passenger at most one is accepted.

Trips are given up when an order ends without tickets (refused, failed, cancelled, expired) and when
a ticket is refunded or changed (``forget_trips``), best effort. Whatever a missed release leaves is
healed where it matters: a clash with a trip the system of record no longer holds (and that is not
an order in flight) drops that trip and claims again. After a loss of the guard's data (Redis data,
or a restart of the embedded process) every passenger's trips are restored from the system of
record before the next claim is trusted, once.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence

import structlog

from railbook.domain.errors import DomainError, DuplicateOrder, TripConflict, Unavailable
from railbook.domain.order_state import TicketStatus
from railbook.domain.sale import Trip
from railbook.services.booking.context import OrderContext
from railbook.services.booking.ports import TripClash

log = structlog.get_logger(__name__)

# A trip claimed this recently by an order the system of record does not know yet is in flight (its
# admission and allocation follow the claim), whatever the pending records say.
RECENT_CLAIM_SECONDS = 60
ATTEMPTS = 3
# A restore reads the tickets of trains that left their origin this many days ago or later (no
# train runs longer, so every journey not yet arrived is among them).
RESTORE_DAYS_BACK = 3


async def hold_trips(
    container: OrderContext,
    *,
    order_id: str,
    member_id: int,
    trip: Trip,
    passenger_ids: Sequence[int],
    replaces: str | None = None,
) -> None:
    """Hold ``trip`` for every passenger, or refuse the order with nothing held: DUPLICATE_ORDER when
    the clash is the same member's pending or unpaid order on this train-day (as the duplicate markers
    would say), TRIP_CONFLICT otherwise. ``replaces``: the order of a ticket being changed (its trip
    does not count). Cost: one round trip (one script call per passenger); more only on a clash or
    once after a loss of the trips' data (everyone's are restored from the system of record)."""
    trips = container.trips
    for _ in range(ATTEMPTS):
        now = int(time.time())
        trusted, clash = await trips.claim(order_id, member_id, trip, passenger_ids, now=now, ignore=replaces)
        if not trusted:
            await restore_trips(container, now)
            continue
        if clash is None:
            return
        refusal = await _judge(container, clash, member_id, trip, now)
        if refusal is not None:
            await forget_trips(container, [(order_id, passenger_ids)])
            raise refusal
    await forget_trips(container, [(order_id, passenger_ids)])
    raise Unavailable("The passengers' other trips could not be checked; retry shortly.", retry_after=2)


async def _judge(
    container: OrderContext, clash: TripClash, member_id: int, trip: Trip, now: int
) -> DomainError | None:
    """The refusal a clash makes, or None when the trip it names is stale (then dropped).

    The order's state is read before its tickets: an order and its tickets are committed together, so
    an order the first read does not know is still in flight when the second read would already see it
    (read the other way round, a commit landing between the reads made a live trip look stale)."""
    known = clash.order_id in await container.orders.states([clash.order_id])
    if known:
        since = dt.datetime.fromtimestamp(now, dt.UTC).date() - dt.timedelta(days=RESTORE_DAYS_BACK)
        recorded = await container.orders.held_trips([clash.passenger_id], since)
        status = next((s for _, o, _, _, s in recorded if o == clash.order_id), None)
        stale = status is None  # the order ended or its ticket was refunded or changed
    else:
        status = "PENDING"
        stale = not (
            now - clash.claimed_at < RECENT_CLAIM_SECONDS
            or await container.guard.pending(clash.order_id) is not None
        )
    if stale:
        log.info("stale_trip_dropped", order_id=clash.order_id, passenger_id=clash.passenger_id)
        await container.trips.drop([(clash.order_id, [clash.passenger_id])])
        return None
    if (
        clash.member_id == member_id
        and clash.train_day == trip.train_day
        and status != TicketStatus.PAID.value
    ):
        return DuplicateOrder(
            "One of these passengers already has a pending or unpaid order for this train and date.",
        )
    return TripConflict(
        "A passenger already holds a ticket on this train and date, or on a train whose journey overlaps "
        "this one: one person, one seat at a time.",
        details={"passenger_id": clash.passenger_id},
    )


async def restore_trips(container: OrderContext, now: int) -> None:
    """Set every passenger's trips from the system of record (unpaid and paid tickets not arrived yet),
    then trust them: once per loss of the trips' data, one restore at a time per process."""
    trips = container.trips
    async with trips.restoring:
        if await trips.restored():
            return
        since = dt.datetime.fromtimestamp(now, dt.UTC).date() - dt.timedelta(days=RESTORE_DAYS_BACK)
        held = [
            (p, o, m, t) for p, o, m, t, _ in await container.orders.held_trips(None, since) if t.ends >= now
        ]
        await trips.restore(held, now=now)
        log.info("trips_restored", trips=len(held))


async def forget_trips(container: OrderContext, holds: Sequence[tuple[str, Sequence[int]]]) -> None:
    """Give up the trips of these (order, passenger ids): the order ended without tickets, or these
    tickets were refunded or changed. Best effort: a trip left behind is dropped at its next clash."""
    if not holds:
        return
    try:
        await container.trips.drop(holds)
    except Exception as exc:
        log.warning("trips_not_dropped", error=repr(exc)[:200], orders=len(holds))
