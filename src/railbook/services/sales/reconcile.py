"""Reconciliation: the allocator made to agree with the system of record where that is safe."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field

import structlog

from railbook.domain.seating import journey_mask
from railbook.kit.clock import beijing_today
from railbook.services.ports import SeatHold
from railbook.services.sales.ports import DrainAwareAllocator, SalesContext
from railbook.services.sales.releases import order_release_id, ticket_release_id

log = structlog.get_logger(__name__)


@dataclass
class Reconciliation:
    """What one reconciliation of a train-day found and did."""

    train_code: str
    date: dt.date
    loaded: bool = True
    repaired_seats: int = 0  # seats whose segments held in the database were marked held
    freed_seats: int = 0  # seats whose segments held in the allocator only were freed (drained day)
    unconfirmed: list[str] = field(default_factory=list)  # held in the allocator only: left alone


async def reconcile_day(container: SalesContext, train_code: str, date: dt.date) -> Reconciliation:
    """Mark held in the allocator every segment an active ticket holds in the system of record and
    the allocator shows free (the drift a rebuild racing a commit leaves); free what the allocator
    holds and no active ticket does only where that is provably safe (a drained day, see below).

    Invariant (holding): the allocator never shows free a segment an active ticket holds, so no later
    order is sold a seat the database already gave away. The allocator is read before the database: a
    seat a cancel or refund gives back is freed in the database first and in the allocator after, so a
    ticket still active in the later read was not being given back when the allocator was read, and
    its free bits there are drift. The hold is applied only if the day is still the copy that was read
    (same load epoch; otherwise it is read again) and skips a ticket whose release was applied there
    since.

    Invariant (freeing): a segment held in the allocator but by no active ticket is freed only when
    nothing can still be on its way to the database for it, that is when all of these hold:
    (1) before the allocator and the database are read, the train-day's order stream exists and its
    committer group has no pending and no undelivered entry (every allocation appends its entry in the
    same atomic call, and an entry is acknowledged only after its order is final in the database and a
    failed order's seats were given back), so every allocation the masks show is final in the database
    when it is read; (2) no cancel or returned ticket of the day has an unconfirmed release (that
    release would be applied later and free the same bits again, perhaps under a newer order); (3) at
    the moment of freeing (one atomic call) the day is still the copy that was read (same load epoch)
    and the stream is unchanged and still drained (same last-generated-id: no order allocated since).
    Otherwise (an order accepted but not committed yet, a release on its way, an allocator without a
    stream) such segments are reported in ``unconfirmed`` and left alone: freeing them could sell a
    seat twice.
    """
    result = Reconciliation(train_code, date)
    allocator = container.allocator
    drainer = allocator if isinstance(allocator, DrainAwareAllocator) else None
    for _ in range(3):
        epoch = (await allocator.epochs([(train_code, date)]))[0]
        if epoch is None:
            result.loaded = False
            return result
        mark = await drainer.drained_mark(train_code, date) if drainer is not None else None
        actual = await allocator.masks(train_code, date)
        day = await container.day_records.holders(train_code, date, with_releases=mark is not None)
        if day is None:
            return result
        holds: list[SeatHold] = []
        expected: dict[str, dict[int, int]] = defaultdict(dict)
        for t in day.tickets:
            journey = journey_mask(t.from_index, t.to_index)
            by_seat = expected[t.seat_class]
            by_seat[t.seat_index] = by_seat.get(t.seat_index, 0) | journey
            have = actual.get(t.seat_class, [])
            if t.seat_index < len(have) and journey & ~have[t.seat_index]:
                releases = (order_release_id(t.order_id), ticket_release_id(t.ticket_id, "REFUNDED"))
                holds.append(
                    SeatHold(
                        t.seat_class,
                        t.seat_index,
                        t.from_index,
                        t.to_index,
                        (*releases, ticket_release_id(t.ticket_id, "CHANGED")),
                    )
                )
        orphans = [
            (seat_class, i, m & ~expected.get(seat_class, {}).get(i, 0))
            for seat_class, masks in actual.items()
            for i, m in enumerate(masks)
            if m & ~expected.get(seat_class, {}).get(i, 0)
        ]
        result.unconfirmed = [
            f"{seat_class} seat {i}: segments {bin(extra)} held in the allocator only"
            for seat_class, i, extra in orphans
        ]
        if holds:
            changed = await allocator.hold(train_code, date, holds, expected_epoch=epoch)
            if not changed and (await allocator.epochs([(train_code, date)]))[0] != epoch:
                continue  # loaded again meanwhile: compare with the new copy
            result.repaired_seats = changed
            if changed:
                log.warning(
                    "train_day_reconciled", train_code=train_code, date=date.isoformat(), seats=changed
                )
        if orphans and drainer is not None and mark is not None and not day.pending_releases:
            freed = await drainer.unhold(train_code, date, orphans, expected_epoch=epoch, drained_mark=mark)
            if freed:
                result.freed_seats = freed
                result.unconfirmed = []
                log.warning(
                    "train_day_drift_freed", train_code=train_code, date=date.isoformat(), seats=freed
                )
        return result
    return result


async def reconcile_inventory(
    container: SalesContext, date: dt.date | None = None, train_code: str | None = None
) -> list[Reconciliation]:
    """``reconcile_day`` over the days ``check_inventory`` compares (a day, a train, or all from today,
    in Beijing)."""
    since = None if date else beijing_today()
    days = await container.day_records.open_days(date, train_code, from_date=since)
    return [await reconcile_day(container, d.train_code, d.date) for d in days]
