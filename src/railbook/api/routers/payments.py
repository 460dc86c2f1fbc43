"""HTTP endpoints after an order is committed: pay, cancel, refund, change, waitlist (API.md)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Path, Request, Response, status

from railbook.api.deps import ContainerDep, MemberDep, Principal
from railbook.api.routers.orders import json_response, order_json
from railbook.api.schemas_orders import OrderOut
from railbook.api.schemas_payments import (
    ChangeAcceptedOut,
    ChangeIn,
    PayIn,
    PaymentCallbackIn,
    PaymentCallbackOut,
    RefundOut,
    WaitlistCreatedOut,
    WaitlistIn,
    WaitlistOut,
)
from railbook.bootstrap import Container
from railbook.domain.fees import BEIJING
from railbook.domain.pricing import yuan_text
from railbook.services.after_sale import cancel as cancellation
from railbook.services.after_sale import change, payment, refund, waitlist
from railbook.services.booking import read_model as order_query
from railbook.services.booking.accept import OrderRequest, PassengerChoice
from railbook.services.booking.read_model import OrderView

router = APIRouter(prefix="/api/v1", tags=["payments"])

IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=128)]


def _client_ip(request: Request) -> str:
    return request.client.host if request.client else ""


@router.post("/orders/{order_id}/pay", response_model=OrderOut, response_model_by_alias=True)
async def pay(
    order_id: str,
    body: PayIn,
    principal: MemberDep,
    container: ContainerDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Pay before the deadline: 409 PAY_DEADLINE_PASSED / NOT_PAYABLE; paying again answers as paid."""
    return json_response(order_json(await pay_order(order_id, body, principal, container, idempotency_key)))


async def pay_order(
    order_id: str, body: PayIn, principal: Principal, container: Container, idempotency_key: str | None
) -> OrderView:
    """The validated request to the pay use case, and the order as paid (the route's and the fast
    path's shared step)."""
    order_id = order_id.strip().lower()
    member_id = principal.member_id
    before = await order_query.cached_order(container, member_id=member_id, order_id=order_id)
    paid_now = await payment.pay_order(
        container,
        member_id=member_id,
        order_id=order_id,
        method=body.method,
        idempotency_key=idempotency_key,
    )
    return await order_query.order_after(
        container, member_id=member_id, order_id=order_id, before=before, changed_now=paid_now, paid=True
    )


@router.post("/orders/{order_id}/cancel", response_model=OrderOut, response_model_by_alias=True)
async def cancel(order_id: str, principal: MemberDep, container: ContainerDep) -> Response:
    """Cancel an unpaid order; its seats go back on sale. 409 NOT_CANCELLABLE otherwise."""
    order_id = order_id.strip().lower()
    member_id = principal.member_id
    before = await order_query.cached_order(container, member_id=member_id, order_id=order_id)
    cancelled_now = await cancellation.cancel_order(container, member_id=member_id, order_id=order_id)
    view = await order_query.order_after(
        container,
        member_id=member_id,
        order_id=order_id,
        before=before,
        changed_now=cancelled_now,
        paid=False,
    )
    return json_response(order_json(view))


@router.post("/tickets/{ticket_id}/refund", response_model=RefundOut)
async def refund_ticket(ticket_id: str, principal: MemberDep, container: ContainerDep) -> RefundOut:
    """Refund a paid ticket, less the fee for the time left before departure; the seat goes back on sale."""
    result = await refund.refund_ticket(container, member_id=principal.member_id, ticket_id=ticket_id.strip())
    return RefundOut(
        ticket_id=result.ticket_id, refund_amount=yuan_text(result.refund_fen), fee=yuan_text(result.fee_fen)
    )


@router.post(
    "/tickets/{ticket_id}/change", status_code=status.HTTP_202_ACCEPTED, response_model=ChangeAcceptedOut
)
async def change_ticket(
    ticket_id: str, body: ChangeIn, request: Request, principal: MemberDep, container: ContainerDep
) -> ChangeAcceptedOut:
    """Change a paid ticket once (409 ALREADY_CHANGED after), before its train leaves: another train,
    date or class, or with ``to`` another destination on the same train. The new order's ``total`` is
    what is still owed: a higher fare's difference, paid with /pay; an equal or lower fare is PAID at
    once and the difference refunded less its fee. The old ticket becomes CHANGED only then."""
    ticket_id = ticket_id.strip()
    accepted = await change.change_ticket(
        container,
        member_id=principal.member_id,
        ticket_id=ticket_id,
        date=body.date,
        train_code=body.train_code.strip().upper(),
        seat_class=body.seat_class,
        to_station=body.to.strip() if body.to else None,
        client_ip=_client_ip(request),
    )
    return ChangeAcceptedOut(order_id=accepted.order_id, change_of=ticket_id)


@router.post("/waitlist", status_code=status.HTTP_201_CREATED, response_model=WaitlistCreatedOut)
async def join_waitlist(
    body: WaitlistIn, principal: MemberDep, container: ContainerDep
) -> WaitlistCreatedOut:
    """Wait for seats on a sold-out journey until ``deadline`` (409 NOT_SOLD_OUT while seats remain,
    409 DUPLICATE_ORDER when a passenger already waits for this train-day)."""
    request = OrderRequest(
        date=body.date,
        train_code=body.train_code.strip().upper(),
        from_station=body.from_,
        to_station=body.to,
        passengers=tuple(PassengerChoice(p.passenger_id, p.seat_class, p.seat_pref) for p in body.passengers),
    )
    deadline = body.deadline
    if deadline is not None and deadline.tzinfo is None:
        deadline = deadline.replace(tzinfo=BEIJING)
    waitlist_id = await waitlist.join_waitlist(
        container, member_id=principal.member_id, request=request, deadline=deadline
    )
    return WaitlistCreatedOut(waitlist_id=waitlist_id)


@router.get("/waitlist", response_model=list[WaitlistOut], response_model_by_alias=True)
async def list_waitlist(principal: MemberDep, container: ContainerDep) -> list[WaitlistOut]:
    """The member's waitlist entries, newest first."""
    views = await waitlist.list_waitlist(container, member_id=principal.member_id)
    return [_waitlist_out(v) for v in views]


@router.delete("/waitlist/{waitlist_id}", response_model=WaitlistOut, response_model_by_alias=True)
async def cancel_waitlist(
    waitlist_id: Annotated[int, Path(ge=1, le=2**63 - 1)], principal: MemberDep, container: ContainerDep
) -> WaitlistOut:
    """Stop waiting: a waiting entry → CANCELLED (again: the same answer); 409 NOT_CANCELLABLE once it
    is being filled, filled or expired; someone else's is 404."""
    view = await waitlist.cancel_waitlist(container, member_id=principal.member_id, waitlist_id=waitlist_id)
    return _waitlist_out(view)


def _waitlist_out(v: waitlist.WaitlistView) -> WaitlistOut:
    return WaitlistOut.model_validate(
        {
            "waitlist_id": v.waitlist_id,
            "train_code": v.train_code,
            "date": v.date,
            "from": v.from_station,
            "to": v.to_station,
            "passengers": v.passengers,
            "status": v.status,
            "order_id": v.order_id,
            "deadline": v.deadline,
            "error_code": v.error_code,
            "created_at": v.created_at,
        }
    )


@router.post("/payments/mock/callback", response_model=PaymentCallbackOut)
async def mock_callback(body: PaymentCallbackIn, container: ContainerDep) -> PaymentCallbackOut:
    """The mock provider's payment notice. Authenticated by its HMAC signature, not a member token:
    a bad signature is 400 BAD_SIGNATURE and changes nothing; a replay changes nothing either."""
    payload = payment.callback_payload(
        order_id=body.order_id, provider_ref=body.provider_ref, amount_fen=body.amount_fen, status=body.status
    )
    result = await payment.apply_callback(
        container, provider_name=payment.MOCK, payload=payload, signature=body.signature
    )
    return PaymentCallbackOut(order_id=result.order_id, applied=result.applied)
