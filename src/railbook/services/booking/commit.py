"""Committing queued orders: a batch of order messages becomes orders and tickets in ONE transaction.

Invariants:
- Idempotent on the order id: orders are inserted with ``ON CONFLICT (id) DO NOTHING`` and tickets
  only for the orders this very statement inserted (their ids are derived from the order id), so a
  redelivered message, or two committers racing on the same message, changes nothing.
- The ticket exclusion constraint (PostgreSQL) is the last line of defence: if the batch violates it,
  orders are retried one by one, and an order that still fails is written ``FAILURE``
  (``SEAT_CONFLICT``) and its seats are given back to the allocator (idempotent on the order id) —
  the compensation, without a coordinator.
- Transient store errors propagate: the caller retries later and does not acknowledge, so nothing
  accepted is lost.
- Load epochs: an order is committed only if its train-day is still loaded under the epoch it was
  allocated under (carried in the message). Otherwise the day was rebuilt from the system of record
  (a total loss of Redis data) and the new copy never had the order's seats: committing it would
  hold in the database seats the allocator sells again, so it is written ``FAILURE``
  (``LOST_IN_FAILOVER``) and nothing is given back. A rebuild can still land between that check and
  the commit; the epoch is read again after the commit and, if it moved, the day is reconciled
  (``sales.reconcile_day`` marks the committed seats held again).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from railbook.domain.order_state import OrderStatus
from railbook.services.booking.context import OrderContext
from railbook.services.booking.markers import marker_keep_seconds
from railbook.services.booking.ports import HeldOrder, OrderMessage, SeatConflict
from railbook.services.booking.trips import forget_trips
from railbook.services.booking.view_cache import forget_order_views, publish_written_views
from railbook.services.ports import HeldSeat
from railbook.services.sales.loading import ensure_day_loaded
from railbook.services.sales.reconcile import reconcile_day

__all__ = ["CommitOutcome", "OrderMessage", "commit_batch", "parse_message", "settle"]

log = structlog.get_logger(__name__)


def parse_message(fields: Mapping[Any, Any]) -> OrderMessage:
    """Decode a stream entry / queue item (bytes or str fields)."""
    text = {
        (k.decode() if isinstance(k, bytes) else str(k)): (v.decode() if isinstance(v, bytes) else str(v))
        for k, v in fields.items()
    }
    body = json.loads(text["order"])
    seats = json.loads(text.get("seats", "[]"))
    return OrderMessage(
        order_id=text.get("order_id") or str(body["order_id"]),
        member_id=int(body["member_id"]),
        daily_train_id=int(body["daily_train_id"]),
        train_code=str(body["train_code"]),
        date=dt.date.fromisoformat(str(body["date"])),
        from_index=int(body["from_index"]),
        to_index=int(body["to_index"]),
        from_station=str(body["from_station"]),
        to_station=str(body["to_station"]),
        passengers=tuple(body["passengers"]),
        seats=tuple(sorted(seats, key=lambda s: int(s["position"]))),
        idempotency_key=body.get("idempotency_key"),
        request_hash=body.get("request_hash"),
        created_at=dt.datetime.fromisoformat(str(body["created_at"])),
        epoch=text.get("epoch"),
        change_of=body.get("change_of"),
        credit_fen=int(body.get("credit_fen") or 0),
        boarding=dt.date.fromisoformat(str(body["boarding"])) if body.get("boarding") else None,
    )


@dataclass
class CommitOutcome:
    committed: list[OrderMessage] = field(default_factory=list)  # SUCCESS now (or already)
    failed: list[OrderMessage] = field(default_factory=list)  # FAILURE, seats given back
    written: list[OrderMessage] = field(default_factory=list)  # of the committed, those written now


async def _fail(container: OrderContext, msg: OrderMessage, code: str, text: str) -> None:
    """Record the order as FAILURE (no tickets), then give its seats back (idempotent on the order id)."""
    async with container.orders.transaction() as tx:
        await tx.insert_failed([msg], code, text)
    await give_back_seats(container, msg)


async def give_back_seats(container: OrderContext, msg: OrderMessage) -> None:
    """Give a failed order's seats back to the allocator, except the segments the system of record holds
    for another order; only to the copy of the day they were allocated in (its load epoch).

    Invariant: the allocator never shows free a segment that an active ticket holds. A seat conflict
    means the allocator had that segment free although a committed ticket holds it (a rebuild raced a
    commit, or a release was applied twice after a loss of allocator data); the failed order's bits
    are then the only thing marking it sold, so they stay, and the conflict heals the drift instead of
    repeating it. Each released piece has its own release id, so a retry changes nothing.
    """
    wanted = [(str(s["seat_class"]), int(s["seat_index"])) for s in msg.seats]
    if not wanted:
        return
    rows = await container.orders.held_segments(msg)
    held: dict[tuple[str, int], set[int]] = {}
    for seat_class, index, a, b in rows:
        held.setdefault((seat_class, index), set()).update(range(a, b))
    whole = [HeldSeat(c, i) for c, i in wanted if not held.get((c, i))]
    if whole:
        await container.allocator.release(
            msg.train_code,
            msg.date,
            msg.from_index,
            msg.to_index,
            whole,
            release_id=msg.order_id,
            expected_epoch=msg.epoch,
        )
    for c, i in wanted:
        taken = held.get((c, i))
        if not taken:
            continue
        log.warning("order_release_kept_held_segments", order_id=msg.order_id, seat_class=c, seat_index=i)
        for a, b in _free_runs(msg.from_index, msg.to_index, taken):
            await container.allocator.release(
                msg.train_code,
                msg.date,
                a,
                b,
                [HeldSeat(c, i)],
                release_id=f"{msg.order_id}:{c}:{i}:{a}-{b}",
                expected_epoch=msg.epoch,
            )


def _free_runs(start: int, end: int, taken: set[int]) -> list[tuple[int, int]]:
    """Maximal runs of segments in ``start..end-1`` not in ``taken``, as journeys ``(a, b)``."""
    runs: list[tuple[int, int]] = []
    a: int | None = None
    for k in range(start, end + 1):
        free = k < end and k not in taken
        if free and a is None:
            a = k
        elif not free and a is not None:
            runs.append((a, k))
            a = None
    return runs


Day = tuple[str, dt.date]


async def _epochs(container: OrderContext, messages: Sequence[OrderMessage]) -> dict[Day, str | None]:
    """The current load epoch of every train-day of these messages that carry one (one round trip)."""
    days = sorted({(m.train_code, m.date) for m in messages if m.epoch is not None})
    if not days:
        return {}
    return dict(zip(days, await container.allocator.epochs(days), strict=True))


LOST_MESSAGE = (
    "The order was accepted but lost in a failover before it was committed; no seat is held and "
    "nothing was charged. Please order again."
)


async def _lose(container: OrderContext, stale: Sequence[OrderMessage], outcome: CommitOutcome) -> set[Day]:
    """Write orders of a lost copy of their day ``FAILURE`` / ``LOST_IN_FAILOVER`` (nothing to give back:
    the rebuilt copy never had their seats). An order already written keeps its state; one already
    committed is the drift a rebuild racing its commit leaves, and its day is returned for repair."""
    async with container.orders.transaction() as tx:
        lost = await tx.insert_failed(stale, "LOST_IN_FAILOVER", LOST_MESSAGE, returning=True)
        earlier = [m.order_id for m in stale if m.order_id not in lost]
        states: dict[str, str] = {}
        if earlier:
            states = await tx.states(earlier)
    repair: set[Day] = set()
    for m in stale:
        if m.order_id in lost or states.get(m.order_id) == OrderStatus.FAILURE.value:
            outcome.failed.append(m)
        else:
            outcome.committed.append(m)
            repair.add((m.train_code, m.date))
    if lost:
        log.warning(
            "orders_lost_in_failover", n=len(lost), days=sorted({f"{m.train_code} {m.date}" for m in stale})
        )
    return repair


async def _repair(container: OrderContext, days: set[Day]) -> None:
    """Reconcile days a rebuild may have raced a commit on (best effort: the scheduler sweeps too)."""
    for code, date in sorted(days):
        try:
            await ensure_day_loaded(container, code, date)
            await reconcile_day(container, code, date)
        except Exception as exc:
            log.warning("order_commit_repair_failed", train_code=code, date=str(date), error=repr(exc)[:200])


async def commit_batch(container: OrderContext, messages: Sequence[OrderMessage]) -> CommitOutcome:
    """Write a batch of queued orders; see the module docstring for the invariants it keeps."""
    outcome = CommitOutcome()
    if not messages:
        return outcome
    unique: dict[str, OrderMessage] = {}
    for m in messages:
        unique.setdefault(m.order_id, m)
    epochs = await _epochs(container, list(unique.values()))
    stale = [m for m in unique.values() if m.epoch is not None and epochs[(m.train_code, m.date)] != m.epoch]
    repair = await _lose(container, stale, outcome) if stale else set()
    lost_ids = {m.order_id for m in stale}
    batch = [m for m in unique.values() if m.order_id not in lost_ids]
    await _commit_current(container, batch, outcome)
    if batch:
        # A rebuild that landed between the check and the commit has not seen these orders.
        after = await _epochs(container, batch)
        repair |= {day for day, epoch in after.items() if epoch != epochs[day]}
    if repair:
        await _repair(container, repair)
    return outcome


async def _commit_current(
    container: OrderContext, batch: Sequence[OrderMessage], outcome: CommitOutcome
) -> None:
    """Commit orders of the current copy of their day (the batch, then one by one on a conflict)."""
    if not batch:
        return
    deadline = container.settings.pay_deadline_seconds
    try:
        async with container.orders.transaction() as tx:
            inserted = await tx.insert_committed(batch, deadline)
    except (SeatConflict, LookupError):
        log.warning("order_batch_conflict", size=len(batch))
        inserted = set()
        for m in batch:
            try:
                async with container.orders.transaction() as tx:
                    inserted |= await tx.insert_committed([m], deadline)
            except (SeatConflict, LookupError) as exc:
                # LookupError: a seat the day does not have (the allocator and the database disagree).
                log.warning("order_seat_conflict", order_id=m.order_id, error=repr(exc)[:200])
                await _fail(
                    container,
                    m,
                    "SEAT_CONFLICT",
                    "The seats could not be held in the system of record; nothing was charged.",
                )
                outcome.failed.append(m)
    failed_ids = {m.order_id for m in outcome.failed}
    already = [m for m in batch if m.order_id not in inserted and m.order_id not in failed_ids]
    if already:
        # Redelivered: a committed order stays as it is; a failed one has its seats given back again.
        states = await container.orders.states([m.order_id for m in already])
        for m in already:
            if states.get(m.order_id) == OrderStatus.FAILURE.value:
                await give_back_seats(container, m)
                outcome.failed.append(m)
            else:
                outcome.committed.append(m)
    outcome.committed.extend(m for m in batch if m.order_id in inserted)
    outcome.written.extend(m for m in batch if m.order_id in inserted)


async def settle(container: OrderContext, outcome: CommitOutcome) -> None:
    """Return the sale tokens and drop the pending records of finished orders. Duplicate markers of
    failed orders are cleared; those of committed (unpaid) orders are kept until the pay deadline and a
    margin, so the accept path refuses a second order for the passenger without asking the
    database; payment, cancellation and expiry delete them (``booking.forget_markers``).

    First the read model learns that these orders are written (their generations move on): a reader
    then no longer answers from the pending record, but from the view written now, or the database.
    Before the acknowledgement, so a failure here is retried with the redelivered messages."""
    finished = outcome.committed + outcome.failed
    # Search first: once an order reads as final, search counts it.
    await container.search_changes.train_days_changed({(m.train_code, m.date) for m in finished})
    # Orders written now (not a change's, whose payment may follow at once) are published with their
    # views as written: the passengers' next polls need no database. The others are forgotten.
    fresh = [m for m in outcome.written if m.change_of is None]
    fresh_ids = {m.order_id for m in fresh}
    await asyncio.gather(
        publish_written_views(container, fresh, container.settings.pay_deadline_seconds),
        forget_order_views(
            container, [(m.order_id, m.member_id) for m in finished if m.order_id not in fresh_ids]
        ),
    )
    guard = container.guard
    by_day: dict[tuple[str, dt.date], tuple[list[HeldOrder], list[HeldOrder]]] = {}
    for m, ok in [(m, True) for m in outcome.committed] + [(m, False) for m in outcome.failed]:
        entry = by_day.setdefault((m.train_code, m.date), ([], []))
        entry[0 if ok else 1].append((m.order_id, m.member_id, m.passenger_ids))
    keep = marker_keep_seconds(container.settings)
    # Issued together, so they share the guard's round trips (one per batch, not one per day).
    await asyncio.gather(
        *[
            guard.settle(code, day, done, keep_markers_seconds=keep)
            for (code, day), (done, _) in by_day.items()
        ],
        *[guard.settle(code, day, failed) for (code, day), (_, failed) in by_day.items()],
        guard.forget_pending([(m.order_id, m.member_id) for m in finished]),
    )
    # Failed orders hold no tickets: their passengers' trips go too.
    await forget_trips(container, [(m.order_id, m.traveller_keys) for m in outcome.failed])
