"""HTTP endpoints: placing and reading orders, the member's tickets (API.md)."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Header, Query, Request, Response, status
from fastapi.routing import APIRoute
from pydantic import ValidationError

from railbook.api.deps import ContainerDep, MemberDep, Principal, current_principal, get_container
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
from railbook.domain.errors import InvalidInput
from railbook.domain.pricing import yuan_text
from railbook.services.booking import OrderRequest, PassengerChoice, place_order
from railbook.services.order_query import OrderView, TicketView, get_order, list_orders, list_tickets

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
        }
    )


def _ticket_out(t: TicketView) -> TicketOut:
    return TicketOut(
        ticket_id=t.ticket_id,
        passenger_id=t.passenger_id,
        passenger_name=t.passenger_name,
        seat=t.seat,
        seat_class=t.seat_class,
        price=yuan_text(t.price_fen),
        status=t.status,
    )


async def _create(
    body: OrderIn, request: Request, principal: Principal, container: Container, idempotency_key: str | None
) -> Response:
    if idempotency_key is not None and not idempotency_key.strip():
        raise InvalidInput(
            "The Idempotency-Key header is empty.",
            code="VALIDATION_ERROR",
            details={"fields": [{"field": "Idempotency-Key", "message": "empty"}]},
        )
    order_request = OrderRequest(
        date=body.date,
        train_code=body.train_code.strip().upper(),
        from_station=body.from_station,
        to_station=body.to_station,
        passengers=tuple(PassengerChoice(p.passenger_id, p.seat_class, p.seat_pref) for p in body.passengers),
    )
    accepted = await place_order(
        container,
        member_id=principal.member_id,
        request=order_request,
        idempotency_key=idempotency_key,
        client_ip=request.client.host if request.client else "",
    )
    return Response(
        b'{"order_id":"' + accepted.order_id.encode() + b'","status":"' + accepted.status.encode() + b'"}',
        status_code=status.HTTP_202_ACCEPTED,
        media_type="application/json",
    )


async def create_order(
    body: OrderIn,
    request: Request,
    principal: MemberDep,
    container: ContainerDep,
    idempotency_key: str | None = Header(default=None, alias="Idempotency-Key", max_length=128),
) -> Any:
    """Queue an order (202 with its id); refusals are immediate (409/422/429/503)."""
    return await _create(body, request, principal, container, idempotency_key)


class OrderRoute(APIRoute):
    """``POST /orders`` with a direct path for well-formed requests, the busiest endpoint in a sale.

    A JSON body that validates as ``OrderIn`` (the same model, validated the same way: ``json.loads``
    then python-mode validation) goes straight to the use case with the same dependencies called in
    the same order (member first, as FastAPI resolves it). Anything else (another content type, a
    body or header that does not validate) takes FastAPI's own handler, so 422 answers, their
    details and the OpenAPI document are exactly FastAPI's."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        standard = super().get_route_handler()

        async def handler(request: Request) -> Response:
            headers = request.headers
            key = headers.get("idempotency-key")
            if not headers.get("content-type", "").startswith("application/json") or (
                key is not None and len(key) > 128
            ):
                return await standard(request)
            try:
                body = OrderIn.model_validate(json.loads(await request.body()))
            except (ValueError, ValidationError):
                return await standard(request)
            container = await get_container(request)
            principal = await current_principal(request, container)
            return await _create(body, request, principal, container, key)

        return handler


router.add_api_route(
    "/orders",
    create_order,
    methods=["POST"],
    status_code=status.HTTP_202_ACCEPTED,
    response_model=AcceptedOut,
    responses={
        409: {"description": "DUPLICATE_ORDER or SOLD_OUT"},
        429: {"description": "rate limited"},
        503: {"description": "SALE_BUSY or UNAVAILABLE"},
    },
    route_class_override=OrderRoute,
)


@router.get("/orders", response_model=OrderPage, response_model_by_alias=True)
async def orders(
    principal: MemberDep,
    container: ContainerDep,
    limit: int = Query(20, ge=1, le=100),
    cursor: str | None = Query(None, max_length=512),
) -> OrderPage:
    """The member's orders, newest first, a page at a time."""
    items, next_cursor = await list_orders(
        container, member_id=principal.member_id, limit=limit, cursor=cursor
    )
    return OrderPage(items=[order_out(v) for v in items], next_cursor=next_cursor)


@router.get("/orders/{order_id}", response_model=OrderOut, response_model_by_alias=True)
async def order(order_id: str, principal: MemberDep, container: ContainerDep) -> OrderOut:
    """One order of the member, wherever it is on its way (queue position while PENDING)."""
    return order_out(await get_order(container, member_id=principal.member_id, order_id=order_id[:64]))


@router.get("/tickets", response_model=list[MemberTicketOut], response_model_by_alias=True)
async def tickets(principal: MemberDep, container: ContainerDep) -> list[MemberTicketOut]:
    """The member's tickets, newest first."""
    views = await list_tickets(container, member_id=principal.member_id)
    return [
        MemberTicketOut.model_validate(
            {
                "ticket_id": t.ticket_id,
                "passenger_id": t.passenger_id,
                "passenger_name": t.passenger_name,
                "seat": t.seat,
                "seat_class": t.seat_class,
                "price": yuan_text(t.price_fen),
                "status": t.status,
                "order_id": t.order_id,
                "train_code": t.train_code,
                "date": t.date,
                "from": t.from_station,
                "to": t.to_station,
            }
        )
        for t in views
    ]
