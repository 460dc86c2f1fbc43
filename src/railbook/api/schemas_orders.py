"""API schemas of orders and tickets (API.md); mapped from the service views in the router."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from railbook.domain.antibot import CAPTCHA_ANSWER_MAX, CAPTCHA_ID_MAX

SeatClass = Literal["business", "first", "second", "soft_sleeper", "hard_sleeper", "hard_seat"]


class OrderPassengerIn(BaseModel):
    passenger_id: int = Field(ge=1, le=2**62)
    seat_class: SeatClass
    seat_pref: str | None = Field(default=None, max_length=12)


class OrderIn(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    date: dt.date
    train_code: str = Field(min_length=1, max_length=16)
    from_station: str = Field(alias="from", min_length=1, max_length=32)
    to_station: str = Field(alias="to", min_length=1, max_length=32)
    passengers: list[OrderPassengerIn] = Field(min_length=1, max_length=5)
    # Only after a 403 CAPTCHA_REQUIRED (orders placed faster than a person does): the answer to a
    # captcha from GET /api/v1/captcha, as at login. Not part of the request an Idempotency-Key names.
    captcha_id: str | None = Field(default=None, min_length=1, max_length=CAPTCHA_ID_MAX)
    captcha_answer: str | None = Field(default=None, min_length=1, max_length=CAPTCHA_ANSWER_MAX)


class AcceptedOut(BaseModel):
    order_id: str
    status: Literal["PENDING"] = "PENDING"


class OrderError(BaseModel):
    code: str
    message: str


class TicketOut(BaseModel):
    ticket_id: str
    passenger_id: int
    passenger_name: str
    seat: str
    seat_class: str
    fare_type: str = Field(
        description="The passenger's type the fare was sold at: adult, child, student, disabled_military."
    )
    price: str
    status: str
    refund_amount: str | None = Field(
        default=None,
        description="Paid back on this ticket: its refund, or for a CHANGED ticket the refunded "
        "difference of a cheaper change; null when nothing was refunded.",
    )
    fee: str | None = Field(default=None, description="The fee kept from that refund; null with it.")


class MemberTicketOut(TicketOut):
    model_config = ConfigDict(populate_by_name=True)

    order_id: str
    train_code: str
    date: dt.date | None
    from_station: str = Field(alias="from")
    to_station: str = Field(alias="to")


class OrderOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    order_id: str
    status: Literal["INIT", "PENDING", "SUCCESS", "FAILURE", "EMPTY", "CANCEL"]
    train_code: str | None
    date: dt.date | None
    from_station: str | None = Field(alias="from")
    to_station: str | None = Field(alias="to")
    created_at: dt.datetime
    error: OrderError | None
    payment_status: Literal["UNPAID", "PAID", "REFUNDED", "PARTLY_REFUNDED"] | None
    queue_position: int
    pay_deadline: dt.datetime | None
    total: str
    tickets: list[TicketOut]
    change_of: str | None = Field(
        default=None, description="The ticket this order changes (改签); null for an ordinary order."
    )


class OrderPage(BaseModel):
    items: list[OrderOut]
    next_cursor: str | None
