"""Response bodies of the search endpoints (API.md, "Search")."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SeatClass = Literal["business", "first", "second", "soft_sleeper", "hard_sleeper", "hard_seat"]


class SeatOfferOut(BaseModel):
    remaining: int = Field(examples=[10])
    price: str = Field(description="Yuan, two decimal places.", examples=["553.00"])


class DepartureOut(BaseModel):
    station: str = Field(examples=["北京南"])
    departs: str = Field(examples=["09:00"])
    index: int = Field(description="Stop index on the train (0 = origin).", examples=[0])


class ArrivalOut(BaseModel):
    station: str = Field(examples=["上海虹桥"])
    arrives: str = Field(examples=["13:28"])
    index: int = Field(examples=[4])


class TrainOfferOut(BaseModel):
    """One train between the two stations, with what remains per seat class."""

    model_config = ConfigDict(populate_by_name=True)

    train_code: str = Field(examples=["G1"])
    date: str = Field(
        description="The train's service date (departure from its origin).", examples=["2026-12-01"]
    )
    from_: DepartureOut = Field(alias="from")
    to: ArrivalOut
    duration_minutes: int = Field(examples=[268])
    seats: dict[str, SeatOfferOut]


class SeatOut(BaseModel):
    seat: str = Field(examples=["05-01A"])
    free: bool


class SeatRowOut(BaseModel):
    row: int
    seats: list[SeatOut]


class CarriageOut(BaseModel):
    carriage: str = Field(examples=["05"])
    rows: list[SeatRowOut]


class SeatMapOut(BaseModel):
    carriages: list[CarriageOut]
