"""Request and response bodies of the admin endpoints (API.md "Admin"). Bounded, so absurd input is 422."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from railbook.api.input_patterns import (
    EMPTY_OR_NON_BLANK,
    MOBILE,
    NON_BLANK,
    PRINTABLE,
    TRAIN_CODE_PATTERN,
    stated,
)
from railbook.domain.antibot import BLOCK_REASON_MAX, parse_block_ip
from railbook.domain.errors import InvalidInput
from railbook.domain.identity import validate_mobile
from railbook.domain.seating import SEAT_CLASSES, CarriageSpec
from railbook.domain.timetable import MAX_CARRIAGES, MAX_ROWS, MAX_STOPS, TRAIN_KINDS, StopSpec, TrainSpec

# Printable text only: no control characters (C0, DEL, C1). The document states more of each rule
# (``stated``): what the domain checks after this, with its own messages.
NO_CONTROL = PRINTABLE
Name = Annotated[
    str, Field(min_length=1, max_length=32, pattern=NO_CONTROL, json_schema_extra=stated(pattern=NON_BLANK))
]
Clock = Annotated[str, Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StationIn(Strict):
    name: Name
    code: str = Field(pattern=r"^[A-Z]{3}$", description="Telegraph code: 3 capital letters")
    pinyin: str = Field(
        default="", max_length=64, pattern=NO_CONTROL, json_schema_extra=stated(pattern=EMPTY_OR_NON_BLANK)
    )
    city: str = Field(
        default="", max_length=32, pattern=NO_CONTROL, json_schema_extra=stated(pattern=EMPTY_OR_NON_BLANK)
    )


class StationOut(BaseModel):
    station_id: int
    name: str
    code: str
    pinyin: str = ""
    city: str = ""


class StopIn(Strict):
    station: Name = Field(description="Station name or telegraph code")
    arrives: Clock | None = None
    departs: Clock | None = None
    km: int = Field(ge=0, le=20_000)
    day: int = Field(default=0, ge=0, le=7, description="Days after the departure day")


class CarriageIn(Strict):
    carriage: int = Field(ge=1, le=MAX_CARRIAGES)
    seat_class: str = Field(max_length=16, json_schema_extra=stated(enum=list(SEAT_CLASSES)))
    rows: int = Field(ge=1, le=MAX_ROWS)


class TrainIn(Strict):
    """A train; its ``kind`` is the first letter of its ``code`` (one ``anyOf`` branch per kind)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "anyOf": [
                {"properties": {"code": {"pattern": f"^{kind}"}, "kind": {"const": kind}}}
                for kind in TRAIN_KINDS
            ]
        },
    )
    code: str = Field(
        min_length=2,
        max_length=8,
        pattern=r"^[A-Z][0-9]+$",
        json_schema_extra=stated(pattern=TRAIN_CODE_PATTERN),
    )
    kind: str = Field(min_length=1, max_length=1, json_schema_extra=stated(enum=list(TRAIN_KINDS)))
    stops: list[StopIn] = Field(min_length=2, max_length=MAX_STOPS)
    carriages: list[CarriageIn] = Field(min_length=1, max_length=MAX_CARRIAGES)

    def to_spec(self) -> TrainSpec:
        return TrainSpec(
            code=self.code,
            kind=self.kind,
            stops=tuple(StopSpec(s.station, s.arrives, s.departs, s.km, s.day) for s in self.stops),
            carriages=tuple(CarriageSpec(c.carriage, c.seat_class, c.rows) for c in self.carriages),
        )


class StopOut(BaseModel):
    station: str
    station_code: str
    arrives: str | None = None
    departs: str | None = None
    day: int | None = None
    km: int


class CarriageOut(BaseModel):
    carriage: int
    seat_class: str
    rows: int


class TrainOut(BaseModel):
    code: str
    kind: str
    stops: list[StopOut]
    carriages: list[CarriageOut]
    seats: dict[str, int]


class TrainSummaryOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    code: str
    kind: str
    from_: str = Field(alias="from")
    to: str
    stops: int


class SaleOpenIn(Strict):
    """Either one ``date`` or a ``from``..``to`` range (inclusive)."""

    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        json_schema_extra={
            "oneOf": [
                {
                    "required": ["date"],
                    "properties": {
                        "date": {"type": "string"},
                        "from": {"type": "null"},
                        "to": {"type": "null"},
                    },
                },
                {
                    "required": ["from", "to"],
                    "properties": {
                        "date": {"type": "null"},
                        "from": {"type": "string"},
                        "to": {"type": "string"},
                    },
                },
            ]
        },
    )
    date: dt.date | None = None
    from_: dt.date | None = Field(default=None, alias="from")
    to: dt.date | None = None

    @model_validator(mode="after")
    def _one_form(self) -> SaleOpenIn:
        if self.date is not None and (self.from_ is not None or self.to is not None):
            raise ValueError("give either date, or from and to")
        if self.date is None and (self.from_ is None or self.to is None):
            raise ValueError("give date, or both from and to")
        if self.from_ is not None and self.to is not None and self.to < self.from_:
            raise ValueError("to is before from")
        if self.from_ is not None and self.to is not None and (self.to - self.from_).days > 366:
            raise ValueError("a range spans at most a year")
        return self

    def dates(self) -> list[dt.date]:
        if self.date is not None:
            return [self.date]
        assert self.from_ is not None and self.to is not None
        return [self.from_ + dt.timedelta(days=i) for i in range((self.to - self.from_).days + 1)]


class TrainDay(BaseModel):
    date: str
    train_code: str


class SaleOpenOut(BaseModel):
    opened: list[TrainDay]
    already_open: list[TrainDay]


class ClassInventoryOut(BaseModel):
    seats: int
    sold_per_segment: list[int]
    remaining: dict[str, int]


class InventoryOut(BaseModel):
    train_code: str
    date: str
    stations: list[str]
    classes: dict[str, ClassInventoryOut]


def train_out(view: dict[str, Any]) -> TrainOut:
    return TrainOut.model_validate(view)


class BlockIn(Strict):
    """A blocklist entry: exactly one of ``mobile`` and ``ip`` (an IPv4/IPv6 address or network);
    ``until`` (ISO 8601; UTC when it names no zone) ends the block, none blocks for good."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "oneOf": [
                {"required": [target], "properties": {target: {"type": "string"}}}
                for target in ("mobile", "ip")
            ]
        },
    )
    mobile: str | None = Field(
        default=None, max_length=11, examples=["13912345678"], json_schema_extra=stated(pattern=MOBILE)
    )
    ip: str | None = Field(default=None, max_length=64, examples=["203.0.113.7", "198.51.100.0/24"])
    reason: str = Field(
        min_length=1,
        max_length=BLOCK_REASON_MAX,
        pattern=NO_CONTROL,
        json_schema_extra=stated(pattern=NON_BLANK),
    )
    until: dt.datetime | None = None

    @field_validator("mobile")
    @classmethod
    def _mobile(cls, v: str | None) -> str | None:
        return None if v is None else _checked(validate_mobile, v)

    @field_validator("ip")
    @classmethod
    def _ip(cls, v: str | None) -> str | None:
        return None if v is None else _checked(parse_block_ip, v)

    @field_validator("until", mode="before")
    @classmethod
    def _until_text(cls, v: object) -> object:
        # ISO 8601 text, as the document says; pydantic would also take a number as a Unix time.
        if v is not None and not isinstance(v, str | dt.datetime):
            raise ValueError("until is a date and time (ISO 8601)")
        return v

    @field_validator("until")
    @classmethod
    def _until(cls, v: dt.datetime | None) -> dt.datetime | None:
        if v is None:
            return None
        try:
            moment = v.replace(tzinfo=dt.UTC) if v.tzinfo is None else v.astimezone(dt.UTC)
        except OverflowError:
            raise ValueError("until is out of range") from None
        if not 1970 <= moment.year <= 9000:
            raise ValueError("until is out of range")
        return moment

    @model_validator(mode="after")
    def _one_target(self) -> BlockIn:
        if (self.mobile is None) == (self.ip is None):
            raise ValueError("give exactly one of mobile and ip")
        return self


class BlockOut(BaseModel):
    block_id: int
    mobile: str | None
    ip: str | None
    reason: str
    until: dt.datetime | None
    created_at: dt.datetime
    active: bool = Field(description="Whether the entry blocks now (false once `until` has passed)")


def _checked(check: Callable[[str], str], value: str) -> str:
    """Run a domain rule; its message becomes the field's validation message."""
    try:
        return check(value)
    except InvalidInput as exc:
        raise ValueError(exc.message) from None
