"""One person, one seat at a time: the trips a person holds, claimed on the accept path.

A journey occupies its passenger from the departure at ``from`` to the arrival at ``to``. An order is
accepted only if each of its passengers holds no other trip on the same train-day and none that
overlaps it in time (in flight, unpaid or paid). A person is known by ID number, not by passenger
record: two members who both list someone share that person's trips. The guard keeps them per
traveller key (``identity.traveller_key``: an HMAC of the ID number under the server's secret, so no
ID number is stored with them), which every passenger read of the accept path carries (the cached
rider texts, ``domain.riders``). The check and the hold are one atomic step per person in the trip
guard (a Lua call on the person's own hash in Redis, an uninterrupted method in process), so of two
simultaneous orders for one person, by one member or by two, at most one is accepted.

Where the intake can (a single Redis), the claims ride in the order's admission and allocation round
trip and the admission holds back unless every trip is held (``allocate_holding_trips``): checking
trips then costs an accepted order no round trip. Elsewhere (a cluster, where no script may touch a
person's slot and the day's; the embedded mode, where a claim costs no round trip) the trips are
claimed first (``hold_trips``), so a refusal builds and sends nothing more.

A clash is judged without the database when the data at hand decides it (``verdict_at_hand``): on
the same train-day the duplicate markers tell a pending or unpaid order (DUPLICATE_ORDER) from the
rest, and a trip claimed less than a minute ago is an order in flight or just committed. A refusal
thus costs no more than an acceptance; the system of record is asked (one statement) only about an
older trip, which a missed release may have left behind.

Trips are given up when an order ends without tickets (refused, failed, cancelled, expired) and when
a ticket is refunded or changed (``forget_trips``, by traveller key: the order's message and pending
record carry its passengers' keys, the after-sale reads join the passengers' ID numbers), best effort.
Whatever a missed release leaves is healed where it matters: a clash with a trip the system of record
no longer holds (and that is not an order in flight) drops that trip and claims again, from the end
of its first minute. After a loss of the guard's data (Redis data, or a restart of the embedded
process) everyone's trips are restored from the system of record before the next claim is trusted,
once.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace

import structlog

from railbook.domain.errors import DomainError, DuplicateOrder, TripConflict, Unavailable
from railbook.domain.identity import traveller_key
from railbook.domain.order_state import TicketStatus
from railbook.domain.sale import Trip
from railbook.domain.seating import AllocationRequest
from railbook.services.booking.allocation import Admission, allocate
from railbook.services.booking.context import OrderContext
from railbook.services.booking.ports import TrainDay
from railbook.services.booking.trip_ports import (
    Traveller,
    TripClaim,
    TripClash,
    TripHolds,
    TripRequest,
    TripsNotHeld,
)
from railbook.services.ports import AdmissionRefused

log = structlog.get_logger(__name__)

# A trip claimed this recently is live without asking the system of record: its order is in flight
# (admission and allocation follow the claim, the commit within seconds) or just committed. Bounds how
# long a trip left by a missed release in its first moments can refuse its person.
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
    travellers: Sequence[Traveller],
    train_code: str,
    date: dt.date,
    replaces: str | None = None,
) -> None:
    """Hold ``trip`` (of the train-day ``train_code``, ``date``) for every traveller, or refuse the
    order with nothing held: DUPLICATE_ORDER when the clash is the same member's pending or unpaid
    order on this train-day (as the duplicate markers would say), TRIP_CONFLICT otherwise.
    ``replaces``: the order of a ticket being changed (its trip does not count).

    Cost: one round trip (one script call per traveller). A clash adds no database read when the
    data at hand decides it (``verdict_at_hand``): one round trip for the day's markers when it is on
    this train-day, and a drop of what the claim held when the order had several passengers. The
    database is asked (one statement) only for a clash with a trip claimed over a minute ago, or
    on this train-day while the day's markers are not trusted; and everyone's trips are restored
    from it once after a loss of their data."""
    trips = container.trips
    for _ in range(ATTEMPTS):
        now = int(time.time())
        claim = await trips.claim(TripRequest(order_id, member_id, trip, travellers, now, replaces))
        if claim.trusted and claim.clash is None:
            return
        await settle_claim(container, claim, order_id, member_id, trip, (train_code, date), now)
    await forget_trips(container, [(order_id, [t.key for t in travellers])])
    raise _unchecked()


def _unchecked() -> Unavailable:
    return Unavailable("The passengers' other trips could not be checked; retry shortly.", retry_after=2)


class TripsRefused(Exception):
    """An order refused while its trips were claimed with its admission: nothing of it is left (not
    admitted, what the claim held given back); ``reason`` is the refusal to answer with."""

    def __init__(self, reason: Exception) -> None:
        super().__init__(str(reason))
        self.reason = reason


async def allocate_holding_trips(
    container: OrderContext,
    day: TrainDay,
    request: AllocationRequest,
    message: Mapping[str, str],
    admission: Admission,
    trip: Trip,
    travellers: Sequence[Traveller],
    replaces: str | None,
) -> None:
    """``allocation.allocate`` with the trip claim in the admission's round trip (an intake that
    ``claims_trips``): as ``hold_trips`` then the allocation, one round trip fewer for an accepted
    order, and none more for a refused one. A claim that did not hold every trip admitted nothing; it
    is settled as by ``hold_trips`` and the whole call made again. Every refused admission is raised
    as TripsRefused (nothing of the order left); the allocation's own errors as they come."""
    order_id, member_id = admission.order_id, admission.member_id
    for _ in range(ATTEMPTS):
        now = int(time.time())
        claim = TripRequest(order_id, member_id, trip, travellers, now, replaces)
        try:
            await allocate(container, day, request, order_id, message, replace(admission, trips=claim))
            return
        except AdmissionRefused as refused:
            reason = refused.reason
            if not isinstance(reason, TripsNotHeld):
                raise TripsRefused(reason) from None  # the intake gave back what the claim held
            claimed = reason.claim or TripClaim(False)
            try:
                # The admission found no other order's marker on this train-day before the trips.
                day_key = (day.train_code, day.date)
                await settle_claim(container, claimed, order_id, member_id, trip, day_key, now, markers={})
            except DomainError as refusal:
                raise TripsRefused(refusal) from None
    await forget_trips(container, [(order_id, [t.key for t in travellers])])
    raise TripsRefused(_unchecked())


async def settle_claim(
    container: OrderContext,
    claim: TripClaim,
    order_id: str,
    member_id: int,
    trip: Trip,
    day: tuple[str, dt.date],
    now: int,
    markers: Mapping[int, str] | None = None,
) -> None:
    """After a claim that did not hold every trip: raise the refusal its clash makes (with what it
    held given back), or make the next claim worth trying: everyone's trips restored when they were
    not trusted, the stale trip of the clash dropped. ``markers``: this train-day's duplicate
    markers of the member's passengers when already known (else read for a clash on this
    train-day)."""
    if not claim.trusted:
        await forget_trips(container, [(order_id, claim.held)] if claim.held else [])
        await restore_trips(container, now)
        return
    if claim.clash is None:
        return
    refusal = await _judge(container, claim.clash, order_id, member_id, trip, day, now, markers)
    if refusal is not None:
        await forget_trips(container, [(order_id, claim.held)] if claim.held else [])
        raise refusal


# What a clash makes of the order: refused as a duplicate, refused as a conflict, or the trip it
# names is stale (dropped, and the claim made again).
DUPLICATE, CONFLICT, STALE = "duplicate", "conflict", "stale"


def verdict_at_hand(
    clash: TripClash, order_id: str, member_id: int, trip: Trip, now: int, markers: Mapping[int, str] | None
) -> str | None:
    """The verdict the guard's own data gives, or None when the system of record must tell.

    ``markers``: the train-day's duplicate markers of the member's passengers (order by passenger;
    None when they are not trusted), read only for a clash on this train-day. A clash on this
    train-day with an order of the same member (a member lists a person once, so it holds the trip
    for the same passenger record, or for one the member deleted since) is a DUPLICATE when another
    order of the member holds the holder's marker (pending or unpaid: what the admission itself
    would answer); another member's order is no duplicate, whatever it is. Otherwise a trip claimed less than
    RECENT_CLAIM_SECONDS ago belongs to an order in flight or just committed: a CONFLICT (on this
    train-day that order is paid, or not yet admitted, since it holds no marker). An older trip may
    be one a missed release left behind: the records tell, and so they do for an unpaid order whose
    marker cannot be trusted. A trip left by a missed release within its first minute refuses for
    what remains of that minute, no longer."""
    if clash.member_id == member_id and clash.train_day == trip.train_day:
        if markers is None:
            return None
        holder = markers.get(clash.holder_id)
        if holder is not None and holder != order_id:
            return DUPLICATE
    return CONFLICT if now - clash.claimed_at < RECENT_CLAIM_SECONDS else None


def verdict_from_records(
    clash: TripClash, member_id: int, trip: Trip, state: tuple[str, str | None] | None, in_flight: bool
) -> str:
    """The verdict of the system of record: ``state`` is the clashing order's state and the
    holder's unpaid or paid ticket in it (None: the order is not committed; then ``in_flight``
    tells whether it is still on its way, i.e. claimed moments ago or with its pending record)."""
    if state is None:
        ticket = TicketStatus.UNPAID.value if in_flight else None
    else:
        ticket = state[1]  # None: the order ended without tickets, or this one was refunded or changed
    if ticket is None:
        return STALE
    same_day = clash.member_id == member_id and clash.train_day == trip.train_day
    if same_day and ticket != TicketStatus.PAID.value:
        return DUPLICATE
    return CONFLICT


async def _judge(
    container: OrderContext,
    clash: TripClash,
    order_id: str,
    member_id: int,
    trip: Trip,
    day: tuple[str, dt.date],
    now: int,
    markers: Mapping[int, str] | None,
) -> DomainError | None:
    """The refusal a clash makes, or None when the trip it names is stale (then dropped)."""
    if markers is None and clash.train_day == trip.train_day:
        markers = await container.guard.marker_holders(day[0], day[1], member_id, [clash.holder_id])
    verdict = verdict_at_hand(clash, order_id, member_id, trip, now, markers)
    if verdict is None:
        # One statement reads the order with its ticket: no commit can land between two reads.
        state = await container.orders.trip_state(clash.order_id, clash.holder_id)
        in_flight = state is None and (
            now - clash.claimed_at < RECENT_CLAIM_SECONDS
            or await container.guard.pending(clash.order_id) is not None
        )
        verdict = verdict_from_records(clash, member_id, trip, state, in_flight)
    if verdict == STALE:
        log.info("stale_trip_dropped", order_id=clash.order_id, passenger_id=clash.holder_id)
        await container.trips.drop([(clash.order_id, [clash.traveller])])
        return None
    if verdict == DUPLICATE:
        return DuplicateOrder(
            "One of these passengers already has a pending or unpaid order for this train and date.",
        )
    return TripConflict(
        "A passenger already holds a ticket on this train and date, or on a train whose journey overlaps "
        "this one: one person, one seat at a time.",
        details={"passenger_id": clash.passenger_id},
    )


async def restore_trips(container: OrderContext, now: int) -> None:
    """Set everyone's trips from the system of record (unpaid and paid tickets not arrived yet), by
    traveller key, then trust them: once per loss of the trips' data, one restore at a time per
    process."""
    trips = container.trips
    async with trips.restoring:
        if await trips.restored():
            return
        since = dt.datetime.fromtimestamp(now, dt.UTC).date() - dt.timedelta(days=RESTORE_DAYS_BACK)
        secret = container.jwt_secret
        held = [
            (traveller_key(secret, card), p, o, m, t)
            for p, card, o, m, t, _ in await container.orders.held_trips(None, since)
            if t.ends >= now
        ]
        await trips.restore(held, now=now)
        log.info("trips_restored", trips=len(held))


async def forget_trips(container: OrderContext, holds: TripHolds) -> None:
    """Give up the trips of these (order, traveller keys): the order ended without tickets, or these
    tickets were refunded or changed. Best effort: a trip left behind is dropped at its next clash."""
    if not holds:
        return
    try:
        await container.trips.drop(holds)
    except Exception as exc:
        log.warning("trips_not_dropped", error=repr(exc)[:200], orders=len(holds))


async def forget_passenger_trips(container: OrderContext, holds: Sequence[tuple[str, Sequence[int]]]) -> None:
    """``forget_trips`` for these (order, passenger ids), where the caller read tickets, not their
    traveller keys (a refund, a cancellation, a change): one statement reads the passengers' ID
    numbers. Best effort, as ``forget_trips``."""
    pids = sorted({p for _, ps in holds for p in ps})
    if not pids:
        return
    try:
        cards = await container.orders.passenger_cards(pids)
    except Exception as exc:
        log.warning("trips_not_dropped", error=repr(exc)[:200], orders=len(holds))
        return
    secret = container.jwt_secret
    keys = {pid: traveller_key(secret, card) for pid, card in cards.items()}
    await forget_trips(container, [(o, [keys[p] for p in ps if p in keys]) for o, ps in holds])
