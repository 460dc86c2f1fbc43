"""Duplicate markers beyond the queue: restored from the database, deleted when an order is final."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import structlog

from railbook.config import Settings
from railbook.services.booking.context import OrderContext
from railbook.services.booking.ports import HeldOrder, TrainDay

log = structlog.get_logger(__name__)

# A committed order's markers outlive its pay deadline by this much (expiry deletes them on time;
# this only bounds what a missed deletion can cost: refusals of a passenger who is free again).
MARKER_MARGIN_SECONDS = 300


def marker_keep_seconds(settings: Settings) -> int:
    """How long a committed, unpaid order's duplicate markers live: its pay deadline and a margin."""
    return settings.pay_deadline_seconds + MARKER_MARGIN_SECONDS


async def restore_day_markers(container: OrderContext, day: TrainDay) -> None:
    """Set the markers of every unpaid order of the train-day, then trust the day's markers.

    Once per train-day and process at a time (concurrent requests meanwhile ask the database). An
    order committed after the read had its markers set by its own admission. An order paid or
    cancelled meanwhile may have deleted its marker before it was set again here: the unpaid
    tickets are read again after the markers are set, and the markers of orders no longer unpaid are
    deleted (a payment committed after that read deletes its marker itself, after its commit)."""
    running: set[tuple[str, dt.date]] = container.marker_restores
    key = (day.train_code, day.date)
    if key in running:
        return
    running.add(key)
    try:
        guard = container.guard
        holds = await container.orders.unpaid_holds(day.daily_train_id)
        await guard.restore_markers(day.train_code, day.date, holds, marker_keep_seconds(container.settings))
        still = await container.orders.still_unpaid(sorted({o for o, _, _ in holds}))
        gone: dict[str, tuple[int, list[int]]] = {}
        for o, m, p in holds:
            if o not in still:
                gone.setdefault(o, (m, []))[1].append(p)
        await guard.settle(day.train_code, day.date, [(o, m, ps) for o, (m, ps) in gone.items()])
        await guard.trust_markers(day.train_code, day.date)
        log.info("duplicate_markers_restored", train_code=day.train_code, date=str(day.date), n=len(holds))
    finally:
        running.discard(key)


async def forget_markers(
    container: OrderContext, finished: Sequence[tuple[str, dt.date, str, int, Sequence[int]]]
) -> None:
    """Delete the duplicate markers of orders that are no longer pending or unpaid (paid, cancelled,
    expired): (train code, date, order id, member, passenger ids). Best effort after the commit: a
    marker left behind expires with its pay deadline and margin (``marker_keep_seconds``)."""
    by_day: dict[tuple[str, dt.date], list[HeldOrder]] = {}
    for code, date, order_id, member_id, pids in finished:
        by_day.setdefault((code, date), []).append((order_id, member_id, pids))
    try:
        guard = container.guard
        for (code, date), orders in by_day.items():
            await guard.settle(code, date, orders)
    except Exception as exc:
        log.warning("duplicate_markers_not_cleared", error=repr(exc)[:200], orders=len(finished))


async def forget_order_markers(container: OrderContext, order_ids: Sequence[str]) -> None:
    """``forget_markers`` for these orders, read from the database."""
    if not order_ids:
        return
    rows = await container.orders.order_holds(order_ids)
    orders: dict[str, tuple[str, dt.date, int, list[int]]] = {}
    for oid, code, date, member_id, pid in rows:
        orders.setdefault(oid, (code, date, member_id, []))[3].append(pid)
    await forget_markers(container, [(c, d, o, m, ps) for o, (c, d, m, ps) in orders.items()])
