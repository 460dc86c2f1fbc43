"""What the booking use cases need from the composition root (``bootstrap.Container``)."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Protocol

from railbook.config import Settings
from railbook.services.booking.memos import MemberCache, SoldOutMemo
from railbook.services.booking.ports import (
    AcceptReads,
    OrderGuard,
    OrderIntake,
    OrderReads,
    OrderStore,
    OrderViewCache,
)
from railbook.services.booking.train_days import TrainDayCache
from railbook.services.booking.trip_ports import TripGuard
from railbook.services.ports import Allocator, SearchChanges
from railbook.services.sales.ports import DayRecords


class OrderContext(Protocol):
    """The parts the order path uses (the container's concrete types satisfy it)."""

    settings: Settings
    allocator: Allocator
    jwt_secret: str
    guard: OrderGuard
    trips: TripGuard
    train_days: TrainDayCache
    member_cache: MemberCache
    sold_out_memo: SoldOutMemo
    accept_slots: asyncio.Semaphore
    marker_restores: set[tuple[str, dt.date]]
    day_loads: dict[tuple[str, dt.date], asyncio.Task[bool]]

    @property
    def day_records(self) -> DayRecords:
        """Open train-days in the system of record: the sales use cases booking calls (day loads,
        reconciliation) read them."""
        ...

    @property
    def intake(self) -> OrderIntake: ...

    @property
    def search_changes(self) -> SearchChanges:
        """Search's cached counts of a train-day go when its seats change hands."""
        ...

    @property
    def accept_reads(self) -> AcceptReads: ...

    @property
    def orders(self) -> OrderStore: ...

    @property
    def order_reads(self) -> OrderReads: ...

    @property
    def order_views(self) -> OrderViewCache:
        """The read model's cache of committed orders and member lists (``booking.view_cache``)."""
        ...
