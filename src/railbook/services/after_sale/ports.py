"""What the after-sale use cases need from the outside: the payment provider and the stores of
payments, cancellations, refunds, ticket changes and the waitlist.

The stores speak in the records below (plain snapshots of rows), never in ORM objects. Where a use
case runs several statements in one transaction, the store offers ``transaction()``: an async
context manager yielding a handle whose methods run in that transaction; it commits when the block
ends normally and rolls back on an exception.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from railbook.services.booking.context import OrderContext

MOCK = "mock"
SUCCEEDED = "SUCCEEDED"


# Our references on refund payment rows, by ticket: a plain refund's, and that of the difference a
# cheaper change paid back. The order read model finds a ticket's refund by them.
REFUND_REF_PREFIX = "refund-"
CHANGE_REFUND_REF_PREFIX = "change-refund-"


@dataclass(frozen=True, slots=True)
class Charge:
    """The provider's answer to a charge or a refund."""

    provider: str
    provider_ref: str
    amount_fen: int


class PaymentProvider(Protocol):
    """A payment service: charges, refunds, and the signature its callbacks carry."""

    name: str

    async def charge(self, *, order_id: str, amount_fen: int, idempotency_key: str | None) -> Charge: ...

    async def refund(self, *, order_id: str, amount_fen: int, reference: str) -> Charge: ...

    def sign(self, payload: Mapping[str, Any]) -> str: ...

    def verify(self, payload: Mapping[str, Any], signature: str) -> bool: ...


class PaymentAlreadyRecorded(Exception):
    """A concurrent writer recorded the same provider reference first (the unique key decided)."""


@dataclass(frozen=True, slots=True)
class OrderRecord:
    """An order row as the after-sale use cases read it."""

    id: str
    member_id: int
    train_code: str
    service_date: dt.date
    from_index: int
    to_index: int
    from_station: str
    to_station: str
    status: str
    payment_status: str | None
    total_fen: int
    pay_deadline: dt.datetime | None
    released_at: dt.datetime | None


@dataclass(frozen=True, slots=True)
class TicketRecord:
    """A ticket row as the after-sale use cases read it."""

    id: str
    order_id: str
    member_id: int
    passenger_id: int
    daily_train_id: int
    seat_class: str
    seat_index: int
    from_index: int
    to_index: int
    price_fen: int
    status: str


@dataclass(frozen=True, slots=True)
class TicketSeat:
    """A refunded or changed ticket's seat and journey, to give back to the allocator."""

    ticket_id: str
    status: str
    train_code: str
    service_date: dt.date
    from_index: int
    to_index: int
    seat_class: str
    seat_index: int


@dataclass(frozen=True, slots=True)
class StopTime:
    """When a train leaves a stop: ``HH:MM`` and the days after the train's departure day."""

    departs: str
    day: int


@dataclass(frozen=True, slots=True)
class ChangeRecord:
    """A ticket change row."""

    id: int
    ticket_id: str
    member_id: int
    new_order_id: str
    status: str
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class WaitlistEntry:
    """A waitlist row."""

    id: int
    member_id: int
    train_code: str
    service_date: dt.date
    from_station: str
    to_station: str
    passengers: list[dict[str, object]]
    status: str
    order_id: str | None
    error_code: str | None
    created_at: dt.datetime
    deadline: dt.datetime | None = None
    # The day the passengers board (the service date plus the days until the train leaves
    # ``from_station``), where the read knew it.
    boarding_date: dt.date | None = None


class EventWriter(Protocol):
    """A transaction that can write an outbox event beside its state change."""

    def add_event(self, topic: str, key: str, payload: dict[str, object], *, now: dt.datetime) -> None: ...


class OrderCanceller(EventWriter, Protocol):
    """A transaction that can cancel an order it has locked."""

    async def cancel_order(self, order_id: str, *, now: dt.datetime) -> list[TicketRecord]: ...


# --------------------------------------------------------------------------------------------
# Payments.


@dataclass(frozen=True, slots=True)
class PayableOrder:
    """An order locked to be paid, with what decides how: the pending change that placed it (it
    owes the difference) and the order already paid under the request's Idempotency-Key."""

    order: OrderRecord
    change_id: int | None
    paid_with_key: str | None


class PaymentTx(Protocol):
    """The statements of one payment transaction."""

    async def order_paid_with_key(self, member_id: int, idempotency_key: str) -> str | None: ...

    async def order_of_provider_ref(self, provider: str, provider_ref: str) -> str | None: ...

    async def lock_order(self, order_id: str, member_id: int | None = None) -> OrderRecord | None: ...

    async def lock_to_pay(
        self, order_id: str, member_id: int, idempotency_key: str | None
    ) -> PayableOrder | None: ...

    async def mark_paid(
        self, order_id: str, charge: Charge, *, idempotency_key: str | None, now: dt.datetime
    ) -> list[int]: ...


class PaymentStore(Protocol):
    """Payments of orders; a commit that loses the unique provider reference raises
    ``PaymentAlreadyRecorded``."""

    def transaction(self) -> AbstractAsyncContextManager[PaymentTx]: ...


# --------------------------------------------------------------------------------------------
# Cancellations.


class CancellationTx(OrderCanceller, Protocol):
    """The statements of one cancelling transaction."""

    async def lock_order(self, order_id: str, member_id: int | None = None) -> OrderRecord | None: ...

    async def lock_due_orders(self, now: dt.datetime, limit: int) -> list[OrderRecord]: ...


class CancellationStore(Protocol):
    """Cancelled orders and the confirmation that their seats went back."""

    def transaction(self) -> AbstractAsyncContextManager[CancellationTx]: ...

    async def orders_with_cancelled_tickets(
        self, order_ids: Sequence[str]
    ) -> tuple[list[OrderRecord], list[TicketRecord]]: ...

    async def stamp_orders_returned(self, order_ids: Sequence[str], at: dt.datetime) -> None: ...

    async def unreturned_orders(self, before: dt.datetime, limit: int) -> list[str]: ...


# --------------------------------------------------------------------------------------------
# Refunds.


class RefundTx(EventWriter, Protocol):
    """The statements of one refund transaction."""

    async def member_ticket(self, member_id: int, ticket_id: str) -> TicketRecord | None: ...

    async def lock_order(self, order_id: str) -> OrderRecord | None: ...

    async def lock_ticket(self, ticket_id: str) -> TicketRecord: ...

    async def refunded_amount(self, order_id: str, provider_ref: str) -> int | None: ...

    async def stop_time(self, daily_train_id: int, stop_index: int) -> StopTime | None: ...

    async def mark_refunded(
        self, ticket_id: str, refund: Charge, *, fee_fen: int, now: dt.datetime
    ) -> None: ...

    async def paid_ticket_count(self, order_id: str) -> int: ...

    async def set_payment_status(self, order_id: str, payment_status: str, *, now: dt.datetime) -> None: ...


class RefundStore(Protocol):
    """Refunded tickets and the confirmation that their seats went back."""

    def transaction(self) -> AbstractAsyncContextManager[RefundTx]: ...

    async def seats_to_return(self, ticket_ids: Sequence[str]) -> list[TicketSeat]: ...

    async def stamp_tickets_returned(self, ticket_ids: Sequence[str], at: dt.datetime) -> None: ...

    async def unreturned_tickets(self, before: dt.datetime, limit: int) -> list[str]: ...


# --------------------------------------------------------------------------------------------
# Ticket changes.


class ChangeReader(Protocol):
    """The reads that check a change request (one read-only unit, nothing written)."""

    async def member_ticket(self, member_id: int, ticket_id: str) -> TicketRecord | None: ...

    async def order(self, order_id: str) -> OrderRecord: ...

    async def stop_time(self, daily_train_id: int, stop_index: int) -> StopTime | None: ...

    async def change_in_progress(self, ticket_id: str) -> bool: ...

    async def came_from_change(self, order_id: str) -> bool: ...


class ChangeTx(OrderCanceller, Protocol):
    """The statements of one change's settlement."""

    async def lock_pending_change(self, change_id: int, *, wait: bool = False) -> ChangeRecord | None: ...

    async def lock_new_order(self, order_id: str) -> OrderRecord | None: ...

    async def set_change_status(self, change_id: int, status: str, *, now: dt.datetime) -> None: ...

    async def order_of_ticket(self, ticket_id: str) -> str: ...

    async def lock_order(self, order_id: str) -> OrderRecord | None: ...

    async def lock_ticket(self, ticket_id: str) -> TicketRecord: ...

    async def fare_of(self, order_id: str) -> int: ...

    async def stop_time(self, daily_train_id: int, stop_index: int) -> StopTime | None: ...

    async def mark_changed(self, ticket_id: str, *, now: dt.datetime) -> None: ...

    def add_payment(
        self,
        order_id: str,
        charge: Charge,
        *,
        kind: str,
        now: dt.datetime,
        idempotency_key: str | None = None,
        fee_fen: int | None = None,
    ) -> None: ...

    async def set_payment_status(self, order_id: str, payment_status: str, *, now: dt.datetime) -> None: ...

    async def mark_paid(self, order_id: str, *, now: dt.datetime) -> None: ...


class ChangeStore(Protocol):
    """Ticket changes: the request, the pending list and each settlement."""

    def reading(self) -> AbstractAsyncContextManager[ChangeReader]: ...

    def transaction(self) -> AbstractAsyncContextManager[ChangeTx]: ...

    async def add_change(
        self, *, ticket_id: str, member_id: int, new_order_id: str, now: dt.datetime
    ) -> None: ...

    async def pending_changes(self, limit: int) -> list[int]: ...

    async def new_order_of(self, change_id: int) -> str | None: ...

    async def pending_change_of_order(self, order_id: str, member_id: int | None = None) -> int | None: ...


# --------------------------------------------------------------------------------------------
# The waitlist.


class WaitlistTx(EventWriter, Protocol):
    """The statements of one waitlist transaction."""

    async def waiting_count(self, member_id: int, *, status: str, limit: int) -> int: ...

    async def lock_member(self, member_id: int) -> None: ...

    async def passengers_waiting(
        self, member_id: int, train_code: str, service_date: dt.date, *, statuses: Sequence[str]
    ) -> set[int]: ...

    async def add_entry(
        self,
        *,
        member_id: int,
        train_code: str,
        service_date: dt.date,
        from_station: str,
        to_station: str,
        passengers: list[dict[str, object]],
        status: str,
        deadline: dt.datetime,
        now: dt.datetime,
    ) -> int: ...

    async def settle(
        self,
        entry_id: int,
        *,
        from_status: str,
        status: str,
        error_code: str | None,
        order_id: str | None,
        now: dt.datetime,
    ) -> None: ...

    async def reopen_stale_claims(
        self, *, claimed: str, waiting: str, before: dt.datetime, now: dt.datetime
    ) -> None: ...

    async def expire_departed(
        self, *, waiting: str, expired: str, today: dt.date, error_code: str, now: dt.datetime
    ) -> None: ...

    async def expire_due(self, *, waiting: str, expired: str, error_code: str, now: dt.datetime) -> None: ...

    async def cancel_entry(
        self, member_id: int, entry_id: int, *, waiting: str, cancelled: str, now: dt.datetime
    ) -> WaitlistEntry | None: ...


class WaitlistStore(Protocol):
    """Waitlist entries."""

    def transaction(self) -> AbstractAsyncContextManager[WaitlistTx]: ...

    async def own_passengers(self, member_id: int, passenger_ids: Sequence[int]) -> set[int]: ...

    async def entries_of_day(
        self, train_code: str, service_date: dt.date, *, status: str, limit: int
    ) -> list[WaitlistEntry]: ...

    async def claim(self, entry_id: int, *, waiting: str, claimed: str, now: dt.datetime) -> bool: ...

    async def days_with(self, status: str) -> list[tuple[str, dt.date]]: ...

    async def entries_of_member(self, member_id: int, limit: int) -> list[WaitlistEntry]: ...

    async def departs(self, daily_train_id: int, stop_index: int) -> StopTime | None: ...


class AfterSaleContext(OrderContext, Protocol):
    """The order context, the process's payment provider and the after-sale stores (all built once
    by the container)."""

    @property
    def payment_provider(self) -> PaymentProvider: ...

    @property
    def payments(self) -> PaymentStore: ...

    @property
    def cancellations(self) -> CancellationStore: ...

    @property
    def refunds(self) -> RefundStore: ...

    @property
    def ticket_changes(self) -> ChangeStore: ...

    @property
    def waitlists(self) -> WaitlistStore: ...
