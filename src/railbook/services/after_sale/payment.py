"""Paying an order, and the provider's signed callback.

An order is payable while it is ``SUCCESS`` (seats held) and ``UNPAID``, up to its pay deadline.
Paying moves the order to ``PAID`` and its tickets to ``PAID`` in one transaction, with a
``payment`` row and an outbox event beside them. Paying is idempotent: a paid order answers as
paid, an ``Idempotency-Key`` seen before answers with the order it paid, and a provider callback
is applied at most once per ``provider_ref`` (the table's unique key is the last word).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from railbook.domain.errors import (
    AmountMismatch,
    BadCallback,
    BadPaymentMethod,
    DomainError,
    IdempotencyKeyReused,
    NotPayable,
    OrderNotFound,
    PayDeadlinePassed,
)
from railbook.domain.order_state import OrderStatus, PaymentStatus
from railbook.kit.clock import as_utc, utcnow
from railbook.services.after_sale.ports import (
    MOCK,
    SUCCEEDED,
    AfterSaleContext,
    Charge,
    OrderRecord,
    PaymentAlreadyRecorded,
    PaymentProvider,
)
from railbook.services.booking.markers import forget_markers, forget_order_markers
from railbook.services.booking.order_ids import verify_order_id
from railbook.services.booking.view_cache import forget_order_views

log = structlog.get_logger(__name__)


class BadSignature(DomainError):
    """A callback whose signature does not match its payload: it is ignored, nothing changes."""

    code = "BAD_SIGNATURE"


def payment_provider(container: AfterSaleContext, method: str = MOCK) -> PaymentProvider:
    """The provider for a payment method (only the mock one exists)."""
    if method != MOCK:
        raise BadPaymentMethod(f"Unknown payment method {method!r}.")
    return container.payment_provider


def require_order(
    order: OrderRecord | None,
    order_id: str,
    *,
    queued: tuple[AfterSaleContext, int, type[DomainError]] | None = None,
) -> OrderRecord:
    """The order a lock returned; someone else's (or no) order is NOT_FOUND. With ``queued`` (the
    container, the member, the refusal): an order issued to this member and not committed yet is
    still in the queue, and that refusal (409) says so — it can be read back, so it is no 404."""
    if order is not None:
        return order
    if queued is not None:
        container, member_id, refusal = queued
        if verify_order_id(container.jwt_secret, member_id, order_id):
            raise refusal(
                "The order holds no seats yet (it is still in the queue): it can be paid or cancelled "
                "once it does.",
                details={"order_id": order_id},
            )
    raise OrderNotFound("No such order.", details={"order_id": order_id})


def check_payable(order: OrderRecord, now: dt.datetime) -> bool:
    """True when already paid (answer as paid); raises when it cannot be paid; False when payable."""
    if order.payment_status == PaymentStatus.PAID:
        return True
    unpaid = order.payment_status == PaymentStatus.UNPAID
    if (
        unpaid
        and order.status in (OrderStatus.SUCCESS, OrderStatus.CANCEL)
        and order.pay_deadline is not None
        and as_utc(order.pay_deadline) <= now
    ):
        raise PayDeadlinePassed(
            "The pay deadline has passed; the seats have been released.",
            details={"pay_deadline": as_utc(order.pay_deadline).isoformat()},
        )
    if order.status != OrderStatus.SUCCESS or not unpaid:
        raise NotPayable(
            f"The order is {order.status} / {order.payment_status}; it cannot be paid.",
            details={"status": order.status, "payment_status": order.payment_status},
        )
    return False


async def pay_order(
    container: AfterSaleContext,
    *,
    member_id: int,
    order_id: str,
    method: str = MOCK,
    idempotency_key: str | None = None,
    now: dt.datetime | None = None,
) -> bool:
    """Pay an order before its deadline; True when this call moved it from unpaid to paid (False: it
    was paid before, or it came from a change and this call settled the change). The order row stays
    locked from the check to the commit, so expiry (which skips locked rows) and a concurrent payment
    cannot interleave.

    Cost: one transaction of two statements on PostgreSQL (the lock reads the order, the pending
    change that placed it and the order paid under the key at once; the four writes are one), then
    one round trip to the cache store."""
    provider = payment_provider(container, method)
    now = now or utcnow()
    async with container.payments.transaction() as tx:
        found = await tx.lock_to_pay(order_id, member_id, idempotency_key)
        if found is None and idempotency_key:
            # Not this member's order: a key of theirs that paid another order says so first.
            if await tx.order_paid_with_key(member_id, idempotency_key) is not None:
                raise IdempotencyKeyReused("This Idempotency-Key was used to pay another order.")
        if found is not None and found.paid_with_key is not None:
            if found.paid_with_key != order_id:
                raise IdempotencyKeyReused("This Idempotency-Key was used to pay another order.")
            return False
        order = require_order(
            found.order if found is not None else None, order_id, queued=(container, member_id, NotPayable)
        )
        change_id = found.change_id if found is not None else None
        if change_id is None:
            if check_payable(order, now):
                return False
            charge = await provider.charge(
                order_id=order.id, amount_fen=order.total_fen, idempotency_key=idempotency_key
            )
            passengers = await tx.mark_paid(order.id, charge, idempotency_key=idempotency_key, now=now)
    if change_id is not None:
        # A change's new order: it owes the difference, and paying it settles the change (in a
        # transaction of its own, which locks the change before the order).
        from railbook.services.after_sale.change import pay_change

        await pay_change(
            container,
            change_id=change_id,
            member_id=member_id,
            provider=provider,
            idempotency_key=idempotency_key,
            now=now,
        )
        log.info("change_paid", order_id=order_id)
        return False
    log.info("order_paid", order_id=order_id, amount_fen=charge.amount_fen)
    # Paid: no longer "pending or unpaid", so the passenger may be booked on this train-day again.
    # Both in one round trip (the cache store's client pipelines concurrent calls).
    held = [(order.train_code, order.service_date, order.id, order.member_id, passengers)]
    await asyncio.gather(
        forget_order_views(container, [(order_id, member_id)]), forget_markers(container, held)
    )
    return True


@dataclass(frozen=True, slots=True)
class CallbackResult:
    order_id: str
    applied: bool  # False when this provider_ref had been applied before


def callback_payload(
    *, order_id: str, provider_ref: str, amount_fen: int, status: str = SUCCEEDED
) -> dict[str, Any]:
    """The fields a provider callback carries (and signs)."""
    return {"order_id": order_id, "provider_ref": provider_ref, "amount_fen": amount_fen, "status": status}


async def apply_callback(
    container: AfterSaleContext,
    *,
    provider_name: str,
    payload: Mapping[str, Any],
    signature: str,
    now: dt.datetime | None = None,
) -> CallbackResult:
    """A provider's asynchronous payment notice: verified first (BAD_SIGNATURE, nothing changed),
    then applied once per provider_ref; a replay answers as before and changes nothing."""
    provider = payment_provider(container, provider_name)
    if not provider.verify(payload, signature):
        raise BadSignature("The callback signature does not match its payload.")
    order_id = str(payload.get("order_id", ""))
    provider_ref = str(payload.get("provider_ref", ""))
    amount = payload.get("amount_fen")
    if not order_id or not provider_ref or not isinstance(amount, int) or payload.get("status") != SUCCEEDED:
        raise BadCallback("The callback payload is incomplete.")
    now = now or utcnow()
    change_id = await container.ticket_changes.pending_change_of_order(order_id)
    if change_id is not None:
        from railbook.services.after_sale.change import pay_change

        await pay_change(
            container,
            change_id=change_id,
            member_id=None,
            provider=provider,
            charged=Charge(provider.name, provider_ref, amount),
            now=now,
        )
        return CallbackResult(order_id, applied=True)
    try:
        async with container.payments.transaction() as tx:
            known = await tx.order_of_provider_ref(provider.name, provider_ref)
            if known is not None:
                return CallbackResult(known, applied=False)
            order = require_order(await tx.lock_order(order_id), order_id)
            if order.total_fen != amount:
                raise AmountMismatch(
                    "The amount does not match the order.",
                    details={"expected_fen": order.total_fen, "got_fen": amount},
                )
            if check_payable(order, now):
                return CallbackResult(order_id, applied=False)
            await tx.mark_paid(
                order.id, Charge(provider.name, provider_ref, amount), idempotency_key=None, now=now
            )
    except PaymentAlreadyRecorded:
        # A concurrent delivery of the same notice won the unique (provider, provider_ref).
        return CallbackResult(order_id, applied=False)
    await forget_order_views(container, [(order_id, order.member_id)])
    log.info("payment_callback_applied", order_id=order_id, provider_ref=provider_ref)
    await forget_order_markers(container, [order_id])
    return CallbackResult(order_id, applied=True)


__all__ = [
    "MOCK",
    "SUCCEEDED",
    "BadSignature",
    "CallbackResult",
    "apply_callback",
    "callback_payload",
    "check_payable",
    "pay_order",
    "payment_provider",
    "require_order",
]
