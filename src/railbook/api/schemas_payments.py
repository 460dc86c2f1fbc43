"""Request and response bodies of payment, cancel, refund, change and waitlist (API.md, "Orders")."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SeatClass = Literal["business", "first", "second", "soft_sleeper", "hard_sleeper", "hard_seat"]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PayIn(_Body):
    method: Literal["mock"] = "mock"


class RefundOut(BaseModel):
    ticket_id: str
    refund_amount: str = Field(examples=["525.50"])
    fee: str = Field(examples=["27.50"])


class ChangeIn(_Body):
    date: dt.date
    train_code: str = Field(min_length=2, max_length=16)
    seat_class: SeatClass
    to: str | None = Field(
        default=None,
        min_length=1,
        max_length=32,
        description="A new destination on the same train (变更到站).",
    )


class ChangeAcceptedOut(BaseModel):
    order_id: str
    status: Literal["PENDING"] = "PENDING"
    change_of: str = Field(description="The ticket this order changes.")


class WaitlistPassengerIn(_Body):
    passenger_id: int = Field(ge=1)
    seat_class: SeatClass
    seat_pref: str | None = Field(default=None, max_length=8)


class WaitlistIn(_Body):
    date: dt.date
    train_code: str = Field(min_length=2, max_length=16)
    from_: str = Field(alias="from", min_length=1, max_length=32)
    to: str = Field(min_length=1, max_length=32)
    passengers: list[WaitlistPassengerIn] = Field(min_length=1, max_length=5)
    deadline: dt.datetime | None = Field(
        default=None,
        description="Stop waiting then (a time without a zone is Beijing time); default and latest: the "
        "sale cut-off before the train leaves the boarding station.",
    )

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class WaitlistCreatedOut(BaseModel):
    waitlist_id: int


class WaitlistOut(BaseModel):
    waitlist_id: int
    train_code: str
    date: dt.date
    from_: str = Field(alias="from")
    to: str
    passengers: list[dict[str, object]]
    status: Literal["WAITING", "FILLED", "EXPIRED", "CANCELLED"]
    order_id: str | None
    deadline: dt.datetime | None
    error_code: str | None
    created_at: dt.datetime

    model_config = ConfigDict(populate_by_name=True)


class PaymentCallbackIn(_Body):
    order_id: str = Field(max_length=64)
    provider_ref: str = Field(min_length=1, max_length=64)
    amount_fen: int = Field(ge=0)
    status: str = Field(max_length=16)
    signature: str = Field(max_length=128, description="HMAC-SHA256 of the other fields, hex")


class PaymentCallbackOut(BaseModel):
    order_id: str
    applied: bool
