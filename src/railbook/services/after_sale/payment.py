"""Paying an order: the payment-provider interface, the mock provider, and the signed callback.

An order is payable while it is ``SUCCESS`` (seats held) and ``UNPAID``, up to its pay deadline.
Paying moves the order to ``PAID`` and its tickets to ``PAID`` in one transaction, with a
``payment`` row and an outbox event beside them. Paying is idempotent: a paid order answers as
paid, an ``Idempotency-Key`` seen before answers with the order it paid, and a provider callback
is applied at most once per ``provider_ref`` (the table's unique key is the last word).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from railbook.adapters.db.models import Order, Outbox, Payment, Ticket
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
from railbook.domain.order_state import OrderStatus, PaymentStatus, TicketStatus
from railbook.kit.clock import as_utc, utcnow
from railbook.services.booking.accept import OrderContext, forget_order_markers

log = structlog.get_logger(__name__)

MOCK = "mock"
SUCCEEDED = "SUCCEEDED"


class BadSignature(DomainError):
    """A callback whose signature does not match its payload: it is ignored, nothing changes."""

    code = "BAD_SIGNATURE"


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


class MockProvider:
    """An in-process provider that always succeeds; its callbacks are signed with HMAC-SHA256 under a
    key derived from the system secret, so only this deployment can forge them."""

    name = MOCK

    def __init__(self, secret: str) -> None:
        self._key = hmac.new(secret.encode(), b"railbook:payment:mock", hashlib.sha256).digest()

    async def charge(self, *, order_id: str, amount_fen: int, idempotency_key: str | None) -> Charge:
        return Charge(MOCK, f"mock-{uuid.uuid4().hex}", amount_fen)

    async def refund(self, *, order_id: str, amount_fen: int, reference: str) -> Charge:
        return Charge(MOCK, f"mock-refund-{reference}"[:64], amount_fen)

    def sign(self, payload: Mapping[str, Any]) -> str:
        body = json.dumps(dict(payload), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hmac.new(self._key, body.encode(), hashlib.sha256).hexdigest()

    def verify(self, payload: Mapping[str, Any], signature: str) -> bool:
        given = (signature or "").encode("utf-8", "surrogatepass")
        return hmac.compare_digest(self.sign(payload).encode(), given)


class AfterSaleContext(OrderContext, Protocol):
    """The order context and the process's payment provider (built once by the container)."""

    @property
    def payment_provider(self) -> PaymentProvider: ...


def payment_provider(container: AfterSaleContext, method: str = MOCK) -> PaymentProvider:
    """The provider for a payment method (only the mock one exists)."""
    if method != MOCK:
        raise BadPaymentMethod(f"Unknown payment method {method!r}.")
    return container.payment_provider


async def lock_order(session: AsyncSession, order_id: str, member_id: int | None = None) -> Order:
    """The order row, locked for this transaction (FOR UPDATE on PostgreSQL; SQLite's BEGIN IMMEDIATE
    already serialises writers). Someone else's order is NOT_FOUND."""
    stmt = (
        select(Order).where(Order.id == order_id).with_for_update().execution_options(populate_existing=True)
    )
    if member_id is not None:
        stmt = stmt.where(Order.member_id == member_id)
    order = (await session.execute(stmt)).scalar_one_or_none()
    if order is None:
        raise OrderNotFound("No such order.", details={"order_id": order_id})
    return order


def _check_payable(order: Order, now: dt.datetime) -> bool:
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


async def _mark_paid(
    session: AsyncSession, order: Order, charge: Charge, *, idempotency_key: str | None, now: dt.datetime
) -> None:
    session.add(
        Payment(
            order_id=order.id,
            provider=charge.provider,
            provider_ref=charge.provider_ref,
            kind="pay",
            amount_fen=charge.amount_fen,
            status=SUCCEEDED,
            idempotency_key=idempotency_key,
            created_at=now,
        )
    )
    order.payment_status = PaymentStatus.PAID.value
    order.updated_at = now
    await session.execute(
        update(Ticket)
        .where(Ticket.order_id == order.id, Ticket.status == TicketStatus.UNPAID.value)
        .values(status=TicketStatus.PAID.value, updated_at=now)
    )
    session.add(
        Outbox(
            topic="order.paid",
            key=order.id,
            created_at=now,
            payload={
                "order_id": order.id,
                "member_id": order.member_id,
                "amount_fen": charge.amount_fen,
                "provider_ref": charge.provider_ref,
            },
        )
    )


async def pay_order(
    container: AfterSaleContext,
    *,
    member_id: int,
    order_id: str,
    method: str = MOCK,
    idempotency_key: str | None = None,
    now: dt.datetime | None = None,
) -> str:
    """Pay an order before its deadline; returns the order id. The order row stays locked from the
    check to the commit, so expiry (which skips locked rows) and a concurrent payment cannot interleave."""
    provider = payment_provider(container, method)
    now = now or utcnow()
    async with container.sessionmaker() as session, session.begin():
        if idempotency_key:
            seen = (
                (
                    await session.execute(
                        select(Payment.order_id)
                        .join(Order, Order.id == Payment.order_id)
                        .where(
                            Order.member_id == member_id,
                            Payment.idempotency_key == idempotency_key,
                            Payment.kind == "pay",
                        )
                    )
                )
                .scalars()
                .first()
            )
            if seen is not None:
                if seen != order_id:
                    raise IdempotencyKeyReused("This Idempotency-Key was used to pay another order.")
                return order_id
        order = await lock_order(session, order_id, member_id)
        if _check_payable(order, now):
            return order_id
        charge = await provider.charge(
            order_id=order.id, amount_fen=order.total_fen, idempotency_key=idempotency_key
        )
        await _mark_paid(session, order, charge, idempotency_key=idempotency_key, now=now)
    log.info("order_paid", order_id=order_id, amount_fen=charge.amount_fen)
    # Paid: no longer "pending or unpaid", so the passenger may be booked on this train-day again.
    await forget_order_markers(container, [order_id])
    return order_id


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
    try:
        async with container.sessionmaker() as session, session.begin():
            known = (
                await session.execute(
                    select(Payment.order_id).where(
                        Payment.provider == provider.name, Payment.provider_ref == provider_ref
                    )
                )
            ).scalar_one_or_none()
            if known is not None:
                return CallbackResult(known, applied=False)
            order = await lock_order(session, order_id)
            if order.total_fen != amount:
                raise AmountMismatch(
                    "The amount does not match the order.",
                    details={"expected_fen": order.total_fen, "got_fen": amount},
                )
            if _check_payable(order, now):
                return CallbackResult(order_id, applied=False)
            await _mark_paid(
                session, order, Charge(provider.name, provider_ref, amount), idempotency_key=None, now=now
            )
    except IntegrityError:
        # A concurrent delivery of the same notice won the unique (provider, provider_ref).
        return CallbackResult(order_id, applied=False)
    log.info("payment_callback_applied", order_id=order_id, provider_ref=provider_ref)
    await forget_order_markers(container, [order_id])
    return CallbackResult(order_id, applied=True)


__all__ = [
    "BadSignature",
    "CallbackResult",
    "Charge",
    "MockProvider",
    "PaymentProvider",
    "apply_callback",
    "as_utc",
    "callback_payload",
    "lock_order",
    "pay_order",
    "payment_provider",
]
