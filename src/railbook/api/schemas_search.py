"""Response bodies of the search endpoints (API.md, "Search")."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from railbook.api.input_patterns import CLOCK_PATTERN, STRIPPED_TERM, TRAIN_KINDS_LIST, stated
from railbook.services.search.query import TERM_MAX_LENGTH

TERM_TEXT = "Station name, telegraph code or city."
SeatClass = Literal["business", "first", "second", "soft_sleeper", "hard_sleeper", "hard_seat"]


# Constraints checked by the search itself (``check_term``, ``parse_kinds``, ``parse_clock``, with
# their own messages), stated in the document only.
TERM: dict[str, Any] = {
    "min_length": 1,
    "max_length": TERM_MAX_LENGTH,
    "description": TERM_TEXT,
    "json_schema_extra": stated(pattern=STRIPPED_TERM),
}
CLOCK: dict[str, Any] = {"json_schema_extra": stated(pattern=CLOCK_PATTERN)}


class SearchParams(BaseModel):
    """The search query's parameters (constraints as documented in /openapi.json); the route parses the
    common case by hand and validates with this model only what it does not take, so a 422 names the
    same fields, types and messages as FastAPI's own query validation."""

    NAMES: ClassVar[tuple[str, ...]] = ("from", "to", "date", "kind", "depart_after", "depart_before")

    from_: Annotated[str, Field(alias="from", **TERM)]
    to: Annotated[str, Field(**TERM)]
    date: Annotated[
        dt.date, Field(description="Boarding date (the day the train leaves `from`), YYYY-MM-DD.")
    ]
    kind: Annotated[
        str | None,
        Field(
            max_length=32,
            description="Train kinds, e.g. G,D",
            json_schema_extra=stated(pattern=TRAIN_KINDS_LIST),
        ),
    ] = None
    depart_after: Annotated[str | None, Field(max_length=5, description="HH:MM", **CLOCK)] = None
    depart_before: Annotated[str | None, Field(max_length=5, description="HH:MM", **CLOCK)] = None

    @classmethod
    def openapi_parameters(cls) -> list[dict[str, Any]]:
        """The fields as OpenAPI query parameters (the route reads them itself, so FastAPI cannot)."""
        schema = cls.model_json_schema(by_alias=True)
        required = set(schema.get("required", ()))
        return [
            {
                "name": name,
                "in": "query",
                "required": name in required,
                "schema": prop,
                **({"description": prop["description"]} if "description" in prop else {}),
            }
            for name, prop in schema["properties"].items()
        ]


class FaresOut(BaseModel):
    """The fare of each passenger type (12306 rules, rounded to 0.50 yuan), in yuan."""

    adult: str = Field(examples=["553.00"])
    child: str = Field(description="Half the adult fare.", examples=["276.50"])
    student: str = Field(
        description="75 % in second class, half in hard seats, the adult fare elsewhere.",
        examples=["415.00"],
    )
    disabled_military: str = Field(description="Half the adult fare.", examples=["276.50"])


class SeatOfferOut(BaseModel):
    remaining: int = Field(examples=[10])
    price: str = Field(description="The adult fare in yuan, two decimal places.", examples=["553.00"])
    prices: FaresOut


class DepartureOut(BaseModel):
    station: str = Field(examples=["北京南"])
    departs: str = Field(examples=["09:00"])
    index: int = Field(description="Stop index on the train (0 = origin).", examples=[0])
    date: str = Field(
        description="The boarding date: the day the train leaves here.", examples=["2026-12-01"]
    )


class ArrivalOut(BaseModel):
    station: str = Field(examples=["上海虹桥"])
    arrives: str = Field(examples=["13:28"])
    index: int = Field(examples=[4])
    date: str = Field(description="The day the train arrives here.", examples=["2026-12-01"])


class TrainOfferOut(BaseModel):
    """One train between the two stations, with what remains per seat class."""

    model_config = ConfigDict(populate_by_name=True)

    train_code: str = Field(examples=["G1"])
    date: str = Field(
        description="The boarding date: the day the train leaves the passenger's station (the date to "
        "book under).",
        examples=["2026-12-01"],
    )
    service_date: str = Field(description="The day the train left its origin.", examples=["2026-12-01"])
    from_: DepartureOut = Field(alias="from")
    to: ArrivalOut
    duration_minutes: int = Field(examples=[268])
    seats: dict[str, SeatOfferOut]


class TransferOut(BaseModel):
    """A journey with one change of train at the same station."""

    transfer_station: str = Field(examples=["南京南"])
    wait_minutes: int = Field(description="From the first train's arrival to the second's departure.")
    duration_minutes: int = Field(description="From the first departure to the last arrival.")
    legs: list[TrainOfferOut] = Field(min_length=2, max_length=2)


class StationNameOut(BaseModel):
    """A station as the station box suggests it."""

    name: str = Field(examples=["北京南"])
    code: str = Field(description="Telegraph code.", examples=["VNP"])
    pinyin: str = Field(examples=["beijingnan"])
    initials: str = Field(examples=["bjn"])
    city: str = Field(examples=["北京"])


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
