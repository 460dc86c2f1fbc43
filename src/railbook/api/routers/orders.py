"""HTTP endpoints: placing and reading orders, the member's tickets (API.md)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Header, Query, Request, Response, status
from pydantic_core import to_json

from railbook.api.deps import ContainerDep, MemberDep, Principal
from railbook.api.schemas_orders import (
    AcceptedOut,
    MemberTicketOut,
    OrderError,
    OrderIn,
    OrderOut,
    OrderPage,
    TicketOut,
)
from railbook.bootstrap import Container
from railbook.domain.errors import InvalidInput, SoldOut
from railbook.domain.pricing import yuan_text
from railbook.metrics import count_order
from railbook.services.booking.accept import Accepted, OrderRequest, PassengerChoice, place_order
from railbook.services.booking.read_model import OrderView, TicketView, get_order, list_orders, list_tickets
from railbook.services.members.antibot import CaptchaAnswer, challenge_order
from railbook.services.members.blocklist import refuse_blocked_order

router = APIRouter(prefix="/api/v1", tags=["orders"])


def order_out(view: OrderView) -> OrderOut:
    """The API shape of an order."""
    return OrderOut.model_validate(
        {
            "order_id": view.order_id,
            "status": view.status,
            "train_code": view.train_code,
            "date": view.date,
            "from": view.from_station,
            "to": view.to_station,
            "created_at": view.created_at,
            "error": OrderError(**view.error) if view.error else None,
            "payment_status": view.payment_status,
            "queue_position": view.queue_position,
            "pay_deadline": view.pay_deadline,
            "total": yuan_text(view.total_fen),
            "tickets": [_ticket_out(t) for t in view.tickets],
            "change_of": view.change_of,
        }
    )


def order_json(view: OrderView) -> dict[str, Any]:
    """The API shape of an order as plain JSON values, keys in ``OrderOut``'s order: its
    serialisation (``pydantic_core.to_json``, the serialiser FastAPI uses for the response model)
    gives the very bytes ``order_out`` does, without validating a model per order."""
    return {
        "order_id": view.order_id,
        "status": view.status,
        "train_code": view.train_code,
        "date": view.date,
        "from": view.from_station,
        "to": view.to_station,
        "created_at": view.created_at,
        "error": {"code": view.error["code"], "message": view.error["message"]} if view.error else None,
        "payment_status": view.payment_status,
        "queue_position": view.queue_position,
        "pay_deadline": view.pay_deadline,
        "total": yuan_text(view.total_fen),
        "tickets": [
            {
                "ticket_id": t.ticket_id,
                "passenger_id": t.passenger_id,
                "passenger_name": t.passenger_name,
                "seat": t.seat,
                "seat_class": t.seat_class,
                "fare_type": t.fare_type,
                "price": yuan_text(t.price_fen),
                "status": t.status,
                **_refund_json(t),
            }
            for t in view.tickets
        ],
        "change_of": view.change_of,
    }


def _refund_json(t: TicketView) -> dict[str, str | None]:
    """A ticket's ``refund_amount`` and ``fee`` (null when nothing was refunded on it)."""
    if t.refund_fen is None:
        return {"refund_amount": None, "fee": None}
    return {
        "refund_amount": yuan_text(t.refund_fen),
        "fee": None if t.fee_fen is None else yuan_text(t.fee_fen),
    }


def _member_ticket_json(t: TicketView) -> dict[str, Any]:
    """The API shape of a member's ticket (``MemberTicketOut``'s fields, in its order)."""
    return {
        "ticket_id": t.ticket_id,
        "passenger_id": t.passenger_id,
        "passenger_name": t.passenger_name,
        "seat": t.seat,
        "seat_class": t.seat_class,
        "fare_type": t.fare_type,
        "price": yuan_text(t.price_fen),
        "status": t.status,
        **_refund_json(t),
        "order_id": t.order_id,
        "train_code": t.train_code,
        "date": t.date,
        "from": t.from_station,
        "to": t.to_station,
    }


def json_response(content: Any) -> Response:
    """A 200 JSON answer with the bytes and headers FastAPI gives a response model's value."""
    return Response(content=to_json(content), media_type="application/json")


def _ticket_out(t: TicketView) -> TicketOut:
    return TicketOut(
        ticket_id=t.ticket_id,
        passenger_id=t.passenger_id,
        passenger_name=t.passenger_name,
        seat=t.seat,
        seat_class=t.seat_class,
        fare_type=t.fare_type,
        price=yuan_text(t.price_fen),
        status=t.status,
        **_refund_json(t),
    )


async def accept_order(
    body: OrderIn, client_ip: str, principal: Principal, container: Container, idempotency_key: str | None
) -> Accepted:
    """The validated body to the accept use case (the route's and the fast path's shared step)."""
    if idempotency_key is not None and not idempotency_key.strip():
        raise InvalidInput(
            "The Idempotency-Key header is empty.",
            details={"fields": [{"field": "Idempotency-Key", "message": "empty"}]},
        )
    order_request = OrderRequest(
        date=body.date,
        train_code=body.train_code.strip().upper(),
        from_station=body.from_station,
        to_station=body.to_station,
        passengers=tuple(PassengerChoice(p.passenger_id, p.seat_class, p.seat_pref) for p in body.passengers),
    )
    await refuse_blocked_order(container, member_id=principal.member_id, address=client_ip)
    captcha = None
    if body.captcha_id is not None and body.captcha_answer is not None:
        captcha = CaptchaAnswer(body.captcha_id, body.captcha_answer)

    async def challenge(orders_this_minute: int) -> None:
        await challenge_order(container, orders_this_minute, captcha)

    try:
        accepted = await place_order(
            container,
            member_id=principal.member_id,
            request=order_request,
            idempotency_key=idempotency_key,
            client_ip=client_ip,
            challenge=challenge,
        )
    except Exception as exc:
        count_order("sold_out" if isinstance(exc, SoldOut) and exc.code == SoldOut.code else "refused")
        raise
    count_order("accepted")
    return accepted


async def create_order(
    body: OrderIn,
    request: Request,
    principal: MemberDep,
    container: ContainerDep,
    idempotency_key: str | None = Header(default=None, alias="Idempotency-Key", max_length=128),
) -> Any:
    """Queue an order (202 with its id); refusals are immediate (409/422/429/503). Well-formed
    requests are answered by ``api.fast_orders.direct_order`` before they reach this route."""
    client_ip = request.client.host if request.client else ""
    accepted = await accept_order(body, client_ip, principal, container, idempotency_key)
    return AcceptedOut(order_id=accepted.order_id, status="PENDING")


router.add_api_route(
    "/orders",
    create_order,
    methods=["POST"],
    status_code=status.HTTP_202_ACCEPTED,
    response_model=AcceptedOut,
    responses={
        403: {"description": "BLOCKED, or CAPTCHA_REQUIRED (retry with captcha_id and captcha_answer)"},
        409: {"description": "DUPLICATE_ORDER or SOLD_OUT"},
        429: {"description": "rate limited"},
        503: {"description": "SALE_BUSY or UNAVAILABLE"},
    },
)


# The GET routes answer with the JSON bytes themselves (``order_json``): the declared response models
# still describe them in the OpenAPI document, and the answers are byte for byte those of the models.
@router.get("/orders", response_model=OrderPage, response_model_by_alias=True)
async def orders(
    principal: MemberDep,
    container: ContainerDep,
    limit: int = Query(20, ge=1, le=100),
    cursor: str | None = Query(None, max_length=512),
) -> Response:
    """The member's orders, newest first, a page at a time."""
    items, next_cursor = await list_orders(
        container, member_id=principal.member_id, limit=limit, cursor=cursor
    )
    return json_response({"items": [order_json(v) for v in items], "next_cursor": next_cursor})


@router.get("/orders/{order_id}", response_model=OrderOut, response_model_by_alias=True)
async def order(order_id: str, principal: MemberDep, container: ContainerDep) -> Response:
    """One order of the member, wherever it is on its way (queue position while PENDING)."""
    view = await get_order(container, member_id=principal.member_id, order_id=order_id[:64])
    return json_response(order_json(view))


@router.get("/tickets", response_model=list[MemberTicketOut], response_model_by_alias=True)
async def tickets(principal: MemberDep, container: ContainerDep) -> Response:
    """The member's tickets, newest first."""
    views = await list_tickets(container, member_id=principal.member_id)
    return json_response([_member_ticket_json(t) for t in views])
