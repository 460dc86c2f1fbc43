"""The waitlist (12306 "候补"): members ask for a sold-out train-day and are served in arrival order
when seats come back (a cancel, an expiry, a refund or a change returns them).

Filling places an ordinary order for the waiting member through the booking service, so every
rule of the order path (duplicates, sale tokens, the atomic allocation) holds for it too.

A passenger waits at most once per train-day (``DUPLICATE_ORDER``). An entry waits until its
deadline (by default the sale cut-off, ``SALE_CUTOFF_MINUTES`` before the train leaves the boarding
station), then it is ``EXPIRED``; the member may cancel a waiting entry (``CANCELLED``).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass

import structlog

from railbook.domain.errors import (
    Conflict,
    DomainError,
    DuplicateOrder,
    InvalidInput,
    NotCancellable,
    NotFound,
    NotSoldOut,
    PassengerNotFound,
    SoldOut,
    TooManyRequests,
    TrainDeparted,
    Unavailable,
    WaitlistLimit,
    WaitlistNotFound,
)
from railbook.domain.fees import departure_at
from railbook.kit.clock import as_utc, beijing_today, utcnow
from railbook.services.after_sale.ports import AfterSaleContext, WaitlistEntry
from railbook.services.booking.accept import OrderRequest, PassengerChoice, place_order
from railbook.services.booking.ports import TrainDay
from railbook.services.booking.train_days import boarded_train_day, journey_on, refuse_if_departed

log = structlog.get_logger(__name__)

WAITING = "WAITING"
FILLED = "FILLED"
FILLING = "FILLING"  # claimed by a process placing its order; shown as WAITING
CLAIM_TIMEOUT = dt.timedelta(minutes=2)
EXPIRED = "EXPIRED"
CANCELLED = "CANCELLED"
DEADLINE_PASSED = "DEADLINE_PASSED"
FILL_BATCH = 20
MAX_WAITING_PER_MEMBER = 20


@dataclass(frozen=True, slots=True)
class WaitlistView:
    waitlist_id: int
    train_code: str
    date: dt.date
    from_station: str
    to_station: str
    passengers: list[dict[str, object]]
    status: str
    order_id: str | None
    error_code: str | None
    created_at: dt.datetime
    deadline: dt.datetime | None


def _view(w: WaitlistEntry) -> WaitlistView:
    return WaitlistView(
        w.id,
        w.train_code,
        w.boarding_date or w.service_date,
        w.from_station,
        w.to_station,
        list(w.passengers),
        WAITING if w.status == FILLING else w.status,
        w.order_id,
        w.error_code,
        w.created_at,
        None if w.deadline is None else as_utc(w.deadline),
    )


async def _deadline(
    container: AfterSaleContext, day: TrainDay, i: int, asked: dt.datetime | None, now: dt.datetime
) -> dt.datetime:
    """When the entry stops waiting: the one asked for, at the latest the journey's sale cut-off;
    TRAIN_DEPARTED once the sale has closed, 422 for a deadline already past."""
    stop = await container.waitlists.departs(day.daily_train_id, i)
    if stop is None:
        raise InvalidInput("The journey has no departure from its first station.")
    cutoff = departure_at(day.date, stop.departs, stop.day) - dt.timedelta(
        minutes=container.settings.sale_cutoff_minutes
    )
    if cutoff <= now:
        raise TrainDeparted("Sale of this journey has closed; it cannot be waited for.")
    if asked is not None:
        try:
            asked = as_utc(asked).astimezone(dt.UTC)
        except OverflowError:  # at the edge of the calendar: later than any cut-off
            asked = None
    if asked is not None and asked <= now:
        raise InvalidInput(
            "The deadline has already passed.",
            details={"fields": [{"field": "deadline", "message": "in the past"}]},
        )
    # Kept in UTC: SQLite stores the clock time without its zone.
    return (cutoff if asked is None else min(asked, cutoff)).astimezone(dt.UTC)


async def _remaining(container: AfterSaleContext, day: TrainDay, i: int, j: int) -> dict[str, int]:
    try:
        return await container.allocator.remaining(day.train_code, day.date, i, j)
    except NotFound:
        from railbook.services.sales.loading import ensure_day_loaded

        await ensure_day_loaded(container, day.train_code, day.date)
        return await container.allocator.remaining(day.train_code, day.date, i, j)


async def join_waitlist(
    container: AfterSaleContext,
    *,
    member_id: int,
    request: OrderRequest,
    deadline: dt.datetime | None = None,
    now: dt.datetime | None = None,
) -> int:
    """Queue a request for a sold-out journey until its deadline; NOT_SOLD_OUT when the seats it asks
    for are on sale, DUPLICATE_ORDER when one of its passengers already waits for this train-day."""
    now = now or utcnow()
    if not request.passengers:
        raise InvalidInput(
            "Name at least one passenger.", details={"fields": [{"field": "passengers", "message": "empty"}]}
        )
    ids = [p.passenger_id for p in request.passengers]
    if len(set(ids)) != len(ids):
        raise InvalidInput(
            "A passenger appears twice.",
            details={"fields": [{"field": "passengers", "message": "duplicate passenger"}]},
        )
    day = await boarded_train_day(
        container,
        request.train_code,
        request.date,
        request.from_station,
        service_date=request.service_date,
        today=beijing_today(now),
    )
    i, j = journey_on(day, request.from_station, request.to_station)
    refuse_if_departed(day, i, container.settings.sale_cutoff_minutes, now)
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
    until = await _deadline(container, day, i, deadline, now)
    known = await container.waitlists.own_passengers(member_id, ids)
    missing = [pid for pid in ids if pid not in known]
    if missing:
        raise PassengerNotFound("Passenger not found.", details={"passenger_ids": missing})
    remaining = await _remaining(container, day, i, j)
    need = Counter(p.seat_class for p in request.passengers)
    if all(remaining.get(c, 0) >= n for c, n in need.items()):
        raise NotSoldOut(
            "Seats are still on sale for this journey; order them instead.",
            details={"remaining": {c: remaining.get(c, 0) for c in need}},
        )
    async with container.waitlists.transaction() as tx:
        # One join of this member at a time: two concurrent joins cannot both miss each other.
        await tx.lock_member(member_id)
        waiting = await tx.passengers_waiting(
            member_id, day.train_code, day.date, statuses=[WAITING, FILLING]
        )
        twice = sorted(waiting.intersection(ids))
        if twice:
            raise DuplicateOrder(
                "A passenger already waits for this train and date.", details={"passenger_ids": twice}
            )
        if (
            await tx.waiting_count(member_id, status=WAITING, limit=MAX_WAITING_PER_MEMBER)
            >= MAX_WAITING_PER_MEMBER
        ):
            raise WaitlistLimit("Too many waiting requests.")
        return await tx.add_entry(
            member_id=member_id,
            train_code=day.train_code,
            service_date=day.date,
            from_station=day.station_names[i],
            to_station=day.station_names[j],
            passengers=[
                {"passenger_id": p.passenger_id, "seat_class": p.seat_class, "seat_pref": p.seat_pref}
                for p in request.passengers
            ],
            status=WAITING,
            deadline=until,
            now=now,
        )


def _request_of(entry: WaitlistEntry) -> OrderRequest:
    return OrderRequest(
        date=entry.service_date,
        service_date=entry.service_date,  # the entry keeps the train-day it waits for
        train_code=entry.train_code,
        from_station=entry.from_station,
        to_station=entry.to_station,
        passengers=tuple(
            PassengerChoice(
                int(str(p["passenger_id"])),
                str(p["seat_class"]),
                str(p["seat_pref"]) if p.get("seat_pref") else None,
            )
            for p in entry.passengers
        ),
    )


async def fill_train_day(container: AfterSaleContext, train_code: str, date: dt.date) -> int:
    """Place orders for the oldest waiting entries of a train-day while seats remain; returns how many
    were filled.

    Invariant: an entry is served by one process at a time. It is claimed first (``WAITING →
    FILLING``, a conditional update only one process can win), the order is placed outside any
    transaction (SQLite would otherwise deadlock against the booking service's own reads), and the
    outcome is written after. A claim left behind by a crash is handed back after ``CLAIM_TIMEOUT``;
    the order path's duplicate check keeps a retried entry from holding two orders.
    """
    entries = await container.waitlists.entries_of_day(train_code, date, status=WAITING, limit=FILL_BATCH)
    filled = 0
    for entry in entries:
        if entry.deadline is not None and as_utc(entry.deadline) <= utcnow():
            await _settle(container, entry.id, EXPIRED, error_code=DEADLINE_PASSED, claimed=False)
            continue
        request = _request_of(entry)
        try:
            if not await _fits(container, request):
                continue  # a smaller request further back may still fit
        except DomainError as exc:
            await _settle(container, entry.id, EXPIRED, error_code=exc.code, claimed=False)
            continue
        if not await _claim(container, entry.id):
            continue
        try:
            accepted = await place_order(
                container, member_id=entry.member_id, request=request, client_ip="waitlist"
            )
        except (SoldOut, Unavailable, TooManyRequests):
            await _settle(container, entry.id, WAITING)
            continue
        except Conflict as exc:
            if exc.code == "DUPLICATE_ORDER":  # the passenger holds an unpaid order for that day: later
                await _settle(container, entry.id, WAITING)
            else:
                await _settle(container, entry.id, EXPIRED, error_code=exc.code)
            continue
        except DomainError as exc:
            await _settle(container, entry.id, EXPIRED, error_code=exc.code)
            continue
        except BaseException:
            await _settle(container, entry.id, WAITING)
            raise
        await _settle(container, entry.id, FILLED, order_id=accepted.order_id, member_id=entry.member_id)
        filled += 1
    if filled:
        log.info("waitlist_filled", train_code=train_code, date=str(date), count=filled)
    return filled


async def _claim(container: AfterSaleContext, entry_id: int) -> bool:
    return await container.waitlists.claim(entry_id, waiting=WAITING, claimed=FILLING, now=utcnow())


async def _settle(
    container: AfterSaleContext,
    entry_id: int,
    status: str,
    *,
    error_code: str | None = None,
    order_id: str | None = None,
    member_id: int | None = None,
    claimed: bool = True,
) -> None:
    now = utcnow()
    async with container.waitlists.transaction() as tx:
        await tx.settle(
            entry_id,
            from_status=FILLING if claimed else WAITING,
            status=status,
            error_code=error_code,
            order_id=order_id,
            now=now,
        )
        if status == FILLED:
            tx.add_event(
                "waitlist.filled",
                str(entry_id),
                {"waitlist_id": entry_id, "member_id": member_id, "order_id": order_id},
                now=now,
            )


async def _fits(container: AfterSaleContext, request: OrderRequest) -> bool:
    """Whether the seats a request needs are free now: checked before placing an order, so a sold-out
    day costs one read per pass instead of an order attempt (and the member's order rate)."""
    day = await boarded_train_day(
        container, request.train_code, request.date, request.from_station, service_date=request.service_date
    )
    i, j = journey_on(day, request.from_station, request.to_station)
    remaining = await _remaining(container, day, i, j)
    need = Counter(p.seat_class for p in request.passengers)
    return all(remaining.get(c, 0) >= n for c, n in need.items())


async def sweep_waitlists(container: AfterSaleContext, *, today: dt.date | None = None) -> int:
    """Expire entries for days gone by (before ``today``, default: today in Beijing) and try to fill
    every train-day that has waiting entries."""
    today = today or beijing_today()
    async with container.waitlists.transaction() as tx:
        await tx.reopen_stale_claims(
            claimed=FILLING, waiting=WAITING, before=utcnow() - CLAIM_TIMEOUT, now=utcnow()
        )
        await tx.expire_departed(
            waiting=WAITING, expired=EXPIRED, today=today, error_code="DEPARTED", now=utcnow()
        )
        await tx.expire_due(waiting=WAITING, expired=EXPIRED, error_code=DEADLINE_PASSED, now=utcnow())
    days = await container.waitlists.days_with(WAITING)
    filled = 0
    for train_code, date in days:
        filled += await fill_train_day(container, train_code, date)
    return filled


async def list_waitlist(
    container: AfterSaleContext, *, member_id: int, limit: int = 100
) -> list[WaitlistView]:
    """The member's waitlist entries, newest first."""
    return [_view(w) for w in await container.waitlists.entries_of_member(member_id, limit)]


async def cancel_waitlist(
    container: AfterSaleContext, *, member_id: int, waitlist_id: int, now: dt.datetime | None = None
) -> WaitlistView:
    """Stop waiting: a waiting entry becomes CANCELLED (again: the same answer); one being filled, filled
    or expired is NOT_CANCELLABLE; someone else's is not found."""
    now = now or utcnow()
    async with container.waitlists.transaction() as tx:
        entry = await tx.cancel_entry(member_id, waitlist_id, waiting=WAITING, cancelled=CANCELLED, now=now)
        if entry is None:
            raise WaitlistNotFound("No such waitlist entry.", details={"waitlist_id": waitlist_id})
        if entry.status != CANCELLED:
            raise NotCancellable(
                "Only a waiting entry can be cancelled.", details={"status": _view(entry).status}
            )
    log.info("waitlist_cancelled", waitlist_id=waitlist_id)
    return _view(entry)


__all__ = [
    "CANCELLED",
    "EXPIRED",
    "FILLED",
    "WAITING",
    "WaitlistView",
    "cancel_waitlist",
    "fill_train_day",
    "join_waitlist",
    "list_waitlist",
    "sweep_waitlists",
]
