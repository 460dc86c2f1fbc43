"""Placing an order: validate, protect, take a sale token, then one atomic allocate-and-enqueue call.

The accept path asks no database as a rule: the member's passengers come from a cache (in process,
then Redis, filled from the database on a miss), and "this passenger already has a pending or unpaid
order on this train-day" is answered by the duplicate markers in the admission script, kept from
admission until the order is paid, cancelled or expired. Markers are trusted only where they were
restored from the database since the last loss of Redis data; elsewhere the database answers (one
indexed query). Train-day metadata (stops, station names and codes, prices) comes from a small
in-process TTL cache. The order is written to the database later, in batches, by the order committer
(``booking.commit``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import hashlib
import json
import time
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from railbook.domain.errors import (
    DuplicateOrder,
    IdempotencyKeyReused,
    InvalidInput,
    PassengerNotFound,
    SoldOut,
    Unavailable,
)
from railbook.domain.pricing import passenger_fare_fen
from railbook.domain.riders import Rider
from railbook.domain.seating import AllocationRequest, PassengerSeatRequest
from railbook.domain.timetable import boarding_date
from railbook.services.booking.allocation import Admission, OutcomeUnknown, allocate
from railbook.services.booking.context import OrderContext
from railbook.services.booking.markers import (
    restore_day_markers,
)
from railbook.services.booking.memos import refuse_if_sold_out
from railbook.services.booking.order_ids import issue_order_id
from railbook.services.booking.ports import MarkersUnknown, OrderChallenge, OrderGuard, TrainDay
from railbook.services.booking.train_days import boarded_train_day, journey_on, refuse_if_departed, trip_on
from railbook.services.booking.trip_ports import Traveller
from railbook.services.booking.trips import TripsRefused, allocate_holding_trips, forget_trips, hold_trips
from railbook.services.ports import AdmissionRefused, kept_claim, keys_kept_since

log = structlog.get_logger(__name__)

MAX_PASSENGERS = 5


@dataclass(frozen=True, slots=True)
class PassengerChoice:
    passenger_id: int
    seat_class: str
    seat_pref: str | None = None


@dataclass(frozen=True, slots=True)
class OrderRequest:
    date: dt.date  # the boarding date: the day the train leaves ``from_station``
    train_code: str
    from_station: str
    to_station: str
    passengers: tuple[PassengerChoice, ...]
    service_date: dt.date | None = None  # set when the caller already knows the train-day (waitlist)
    # A change (改签): the ticket it replaces, and the fare already paid for it, owed no more.
    change_of: str | None = None
    credit_fen: int = 0

    def digest(self) -> str:
        """Hash of the request body, to tell a retry from a different request under the same key."""
        body = {
            "date": self.date.isoformat(),
            "train_code": self.train_code,
            "from": self.from_station,
            "to": self.to_station,
            "passengers": [[p.passenger_id, p.seat_class, p.seat_pref] for p in self.passengers],
        }
        return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Accepted:
    order_id: str
    status: str = "PENDING"


# Orders between validation and their answer, per process. Each holds at most one Redis connection
# at a time; the bound keeps a crowd of concurrent requests below the client's connection pool
# (which refuses, rather than waits, past its size) with room to spare for everything else.
ACCEPT_SLOTS = 128


def _accepted_from_claim(claim: str, request_hash: str) -> Accepted:
    data = json.loads(claim)
    if data.get("hash") != request_hash:
        raise IdempotencyKeyReused("This Idempotency-Key was used with a different request.")
    return Accepted(order_id=str(data["order_id"]))


def _accepted_from_known(known: str, request_hash: str) -> Accepted:
    """The answer for an order the system of record knows by its key (``"<order id> <hash>"``)."""
    order_id, _, first_hash = known.partition(" ")
    return _accepted_from_claim(kept_claim(order_id, first_hash), request_hash)


async def place_order(
    container: OrderContext,
    *,
    member_id: int,
    request: OrderRequest,
    idempotency_key: str | None = None,
    client_ip: str = "",
    challenge: OrderChallenge | None = None,
    replaces: str | None = None,
) -> Accepted:
    """Accept an order into the train-day's queue (202), or refuse it at once; nothing is written to
    the database here. Invariants: a sale token is held exactly while the order is in flight, its
    duplicate markers while it is pending or unpaid (both given back on every refusal; the token by
    the committer, the markers by payment, cancellation, expiry or a failed commit); its passengers'
    trips while it is in flight, unpaid or paid (``booking.trips``; given back on every refusal);
    the seats and the queue message exist together or not at all (one allocator call). Sale of a
    journey closes ``sale_cutoff_minutes`` before the train leaves the boarding station
    (TRAIN_DEPARTED, from the cached train-day). ``replaces``: the order of a ticket being changed,
    whose trip the new one may overlap.

    Cost of an accepted order: no database statement once the member's passengers are cached and the
    day's markers trusted; one lookup round trip (none when this process saw the passengers in the
    last seconds), and one Redis round trip for the trip claims, all protections, the pending record
    and the allocator call (on a cluster the trip claims take a round trip of their own, before).
    A refused one costs no more (``booking.trips``)."""
    n = len(request.passengers)
    if not 1 <= n <= MAX_PASSENGERS:
        raise InvalidInput(
            f"An order has 1 to {MAX_PASSENGERS} passengers.",
            details={"fields": [{"field": "passengers", "message": f"{n} given"}]},
        )
    ids = [p.passenger_id for p in request.passengers]
    if len(set(ids)) != n:
        raise InvalidInput(
            "A passenger appears twice in the order.",
            details={"fields": [{"field": "passengers", "message": "duplicate passenger"}]},
        )
    guard = container.guard
    settings = container.settings
    if settings.rate_limits_on:
        orders_this_minute = await guard.check_rates(member_id, client_ip)
        if challenge is not None:
            await challenge(orders_this_minute)

    day = await boarded_train_day(
        container, request.train_code, request.date, request.from_station, service_date=request.service_date
    )
    i, j = journey_on(day, request.from_station, request.to_station)
    refuse_if_departed(day, i, settings.sale_cutoff_minutes)
    for pos, p in enumerate(request.passengers):
        if p.seat_class not in day.classes:
            raise InvalidInput(
                f"{day.train_code} has no {p.seat_class} seats.",
                details={
                    "fields": [
                        {"field": f"passengers.{pos}.seat_class", "message": "class not on this train"}
                    ]
                },
            )

    async with container.accept_slots:
        return await _admit_and_enqueue(
            container, guard, day, member_id, request, i, j, idempotency_key, replaces
        )


async def _admit_and_enqueue(
    container: OrderContext,
    guard: OrderGuard,
    day: TrainDay,
    member_id: int,
    request: OrderRequest,
    i: int,
    j: int,
    idempotency_key: str | None,
    replaces: str | None,
) -> Accepted:
    """The protections, the duplicate check and the allocation of a validated order."""
    ids = [p.passenger_id for p in request.passengers]
    # Only a keyed request is ever compared with an earlier one (a retry under its key).
    request_hash = request.digest() if idempotency_key else ""
    cache = container.member_cache
    now = time.monotonic()
    # Passengers as rider texts (name, fare type, birth date, traveller key: ``domain.riders``); one in
    # an older form counts as not cached. A keyed order asks the shared cache, never this process's: a
    # shared cache that knows the passengers knows the member's Idempotency-Keys too (every fill
    # restores them first, ``KeptKey``), so the key is answered for without the database; this
    # process's copy could outlive a loss of the shared cache's data.
    names = None if idempotency_key else _readable(cache.names(member_id, ids, now), ids)
    generation: str | None = None  # set when the shared cache was asked: a fill must match it
    trusted: bool | None = None  # the day's markers: None when not asked (admission tells)
    if names is None:
        names, generation, trusted = await guard.lookup(member_id, ids, day.train_code, day.date)
        names = _readable(names, ids)
        if names is not None:
            cache.remember(member_id, names, now)
    checked = False
    if names is None or trusted is False:
        reads = container.accept_reads
        rows, known = await reads.passengers(member_id, day.daily_train_id, ids, idempotency_key)
        found = {pid: name for pid, name, _ in rows}
        missing = [pid for pid in ids if pid not in found]
        if missing:
            raise PassengerNotFound("Passenger not found.", details={"passenger_ids": missing})
        cache.remember(member_id, found, now)
        if generation is not None:
            keys = await reads.kept_keys(member_id, keys_kept_since(dt.datetime.now(dt.UTC)))
            await guard.cache_passengers(member_id, generation, found, keys)
        if known is not None:  # the system of record knows this key (e.g. after a loss of the cache)
            return _accepted_from_known(known, request_hash)
        names = found
        if trusted is False:
            await restore_day_markers(container, day)
        _refuse_if_busy(rows)
        checked = True
    try:
        await _refuse_if_sold_out(container, day, request, i, j)
    except SoldOut:
        # A retry of an order accepted under its key gets that order, not the train's state since.
        claim = await guard.idempotency_claim(member_id, idempotency_key) if idempotency_key else None
        if claim is None:
            raise
        return _accepted_from_claim(claim, request_hash)
    order_id = issue_order_id(container.jwt_secret, member_id, day.date)
    fares = _fares(day, request, i, j, names)
    args = (container, guard, day, member_id, request, i, j, fares, order_id, idempotency_key, request_hash)
    try:
        return await _enqueue(*args, checked=checked, replaces=replaces)
    except MarkersUnknown:
        # The day's markers are not trusted (never restored here, or lost with Redis data): the
        # database answers for this order, and the markers are restored for the next ones.
        reads = container.accept_reads
        rows, known = await reads.passengers(member_id, day.daily_train_id, ids, idempotency_key)
        if known is not None:
            return _accepted_from_known(known, request_hash)
        await restore_day_markers(container, day)
        _refuse_if_busy(rows)
        return await _enqueue(*args, checked=True, replaces=replaces)


def _readable(names: Mapping[int, str] | None, ids: Sequence[int]) -> dict[int, str] | None:
    """The cached rider texts of these passengers, or None unless every one is in the current form."""
    if names is None or any(Rider.parse(names.get(pid, "")) is None for pid in ids):
        return None
    return dict(names)


@dataclass(frozen=True, slots=True)
class _Fare:
    """A passenger's ticket as the order prices it: the name on it, the fare type and the price; and
    the traveller key of the person (whose trips the order claims)."""

    name: str
    fare_type: str
    price_fen: int
    traveller: str


def _fares(
    day: TrainDay, request: OrderRequest, i: int, j: int, riders: Mapping[int, str]
) -> dict[int, _Fare]:
    """Each passenger's fare by type on the boarding date (12306 shares of the adult fare);
    NOT_A_CHILD for a child fare of someone 14 or older that day."""
    departs = day.departs_at[i] if i < len(day.departs_at) else None
    travel_date = departs.date() if departs is not None else day.date
    fares: dict[int, _Fare] = {}
    for p in request.passengers:
        rider = Rider.parse(riders[p.passenger_id])
        if rider is None:  # the callers read every rider in the current form (``_readable``)
            raise ValueError(f"passenger {p.passenger_id} has no rider text in the current form")
        fare_type = rider.fare_type_on(travel_date)
        adult = day.prices.get((p.seat_class, i, j), 0)
        fares[p.passenger_id] = _Fare(
            rider.name, fare_type, passenger_fare_fen(adult, fare_type, p.seat_class), rider.traveller
        )
    return fares


async def _refuse_if_sold_out(
    container: OrderContext, day: TrainDay, request: OrderRequest, i: int, j: int
) -> None:
    need: dict[str, int] = {}
    for p in request.passengers:
        need[p.seat_class] = need.get(p.seat_class, 0) + 1
    await refuse_if_sold_out(container, day.train_code, day.date, need, i, j)


def _refuse_if_busy(rows: Sequence[tuple[int, str, bool]]) -> None:
    if any(busy for _, _, busy in rows):
        raise DuplicateOrder(
            "One of these passengers already has a pending or unpaid order for this train and date.",
        )


async def _enqueue(
    container: OrderContext,
    guard: OrderGuard,
    day: TrainDay,
    member_id: int,
    request: OrderRequest,
    i: int,
    j: int,
    fares: Mapping[int, _Fare],
    order_id: str,
    idempotency_key: str | None,
    request_hash: str,
    *,
    checked: bool,
    replaces: str | None = None,
) -> Accepted:
    ids = [p.passenger_id for p in request.passengers]
    trip = trip_on(day, i, j)  # what the passengers' other trips may not collide with
    travellers = [Traveller(pid, fares[pid].traveller) for pid in ids]
    keys = [t.key for t in travellers]
    hold = functools.partial(
        hold_trips,
        container,
        order_id=order_id,
        member_id=member_id,
        trip=trip,
        travellers=travellers,
        train_code=day.train_code,
        date=day.date,
        replaces=replaces,
    )
    # Without a key to answer for, the trips are claimed first: with the admission and allocation where
    # the intake can (one round trip), else on their own, so a refusal builds nothing more.
    claim_with_admission = not idempotency_key and container.intake.claims_trips
    if not idempotency_key and not claim_with_admission:
        await hold()
    payload: dict[str, Any] = {
        "v": 1,
        "order_id": order_id,
        "member_id": member_id,
        "daily_train_id": day.daily_train_id,
        "train_code": day.train_code,
        "date": day.date.isoformat(),
        # The day shown while the order is queued (the passenger's boarding date, API.md).
        "boarding": boarding_date(
            day.date, day.departure_days[i] if i < len(day.departure_days) else 0
        ).isoformat(),
        "from_index": i,
        "to_index": j,
        "from_station": day.station_names[i],
        "to_station": day.station_names[j],
        "passengers": [
            {
                "passenger_id": p.passenger_id,
                "name": fares[p.passenger_id].name,
                "seat_class": p.seat_class,
                "seat_pref": p.seat_pref,
                "price_fen": fares[p.passenger_id].price_fen,
                "fare_type": fares[p.passenger_id].fare_type,
                # The person's trips are given up by it when the order ends without tickets.
                "traveller": fares[p.passenger_id].traveller,
            }
            for p in request.passengers
        ],
        "idempotency_key": idempotency_key,
        "request_hash": request_hash or None,
        "created_at": dt.datetime.now(dt.UTC).isoformat(),
    }
    if request.change_of:
        payload["change_of"] = request.change_of
        payload["credit_fen"] = request.credit_fen
    # The queue message and the pending record are the same JSON, encoded once.
    encoded = json.dumps(payload, ensure_ascii=False)
    tokens = container.settings.sale_tokens_per_train_day
    alloc_request = AllocationRequest(
        i, j, tuple(PassengerSeatRequest(p.seat_class, p.seat_pref or None) for p in request.passengers)
    )
    message = {"order": encoded}
    admission: Admission | None = None
    if idempotency_key:
        claim = await guard.admit_order(
            day.train_code,
            day.date,
            member_id,
            ids,
            order_id,
            tokens,
            record=payload,
            idempotency=(idempotency_key, request_hash),
            checked=checked,
            record_json=encoded,
        )
        if claim is not None:
            return _accepted_from_claim(claim, request_hash)
        # The key is this order's now: a retry under it is answered by its claim, not by its trips.
        try:
            await hold()
        except BaseException:
            await guard.refuse_order(day.train_code, day.date, member_id, ids, order_id, idempotency_key)
            raise
    else:
        # Without a key to answer for, the admission rides in the allocation's round trip where the
        # store allows (Redis): one round trip, not two, and the seats are taken only if it admitted.
        admission = Admission(member_id, ids, order_id, tokens, payload, encoded, checked)
    try:
        if claim_with_admission:
            assert admission is not None
            await allocate_holding_trips(
                container, day, alloc_request, message, admission, trip, travellers, replaces
            )
        else:
            await allocate(container, day, alloc_request, order_id, message, admission)
    except TripsRefused as refused:  # nothing of the order is left, its trips given back
        raise refused.reason from None
    except AdmissionRefused as refused:  # nothing of the order is left (the admission undid itself)
        await forget_trips(container, [(order_id, keys)])
        raise refused.reason from None
    except (OutcomeUnknown, asyncio.CancelledError) as exc:
        # The allocation script may have run (and queued the order) even though no answer came back:
        # undoing the claim and the markers could let a retry buy a second order. Keep them; the
        # markers lapse after AMBIGUOUS_MARKER_SECONDS unless the committer confirms the order.
        cleanup = _keep_for_the_committer(guard, day, member_id, ids, order_id)
        if isinstance(exc, asyncio.CancelledError):
            _background(cleanup)
            raise
        await cleanup
        raise Unavailable(
            "The seat store did not answer; the order may still be confirmed: read it back by its id.",
            details={"order_id": order_id},
            retry_after=2,
        ) from exc.__cause__
    except BaseException as exc:
        await guard.refuse_order(day.train_code, day.date, member_id, ids, order_id, idempotency_key)
        await forget_trips(container, [(order_id, keys)])
        if isinstance(exc, SoldOut) and exc.code == "SOLD_OUT":
            classes = list(dict.fromkeys(p.seat_class for p in request.passengers))
            container.sold_out_memo.remember(day.train_code, day.date, classes, i, j)
        raise
    return Accepted(order_id=order_id)


# Duplicate markers of an order whose allocation outcome is unknown: long enough for the committer to
# confirm a queued order (it re-arms them for the unpaid period), short enough not to block a
# passenger for long when the script never ran.
AMBIGUOUS_MARKER_SECONDS = 120
_cleanups: set[asyncio.Task[None]] = set()


def _background(coro: Awaitable[None]) -> None:
    task = asyncio.ensure_future(coro)
    _cleanups.add(task)
    task.add_done_callback(_cleanups.discard)


async def _keep_for_the_committer(
    guard: OrderGuard, day: TrainDay, member_id: int, ids: Sequence[int], order_id: str
) -> None:
    """Shorten the markers and the pending record of an order whose allocation outcome is unknown."""
    try:
        held = [(order_id, member_id, ids)]
        await guard.settle(day.train_code, day.date, held, keep_markers_seconds=AMBIGUOUS_MARKER_SECONDS)
        await guard.forget_pending([(order_id, member_id)])
    except Exception:  # the store is still away: the markers' own expiry bounds the harm
        log.warning("ambiguous_order_not_shortened", order_id=order_id)
