"""Request and response bodies of the member endpoints (API.md, "Members")."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator

from railbook.api.input_patterns import ID_CARD, MOBILE, PERSON_NAME, PRINTABLE, stated
from railbook.domain.antibot import CAPTCHA_ANSWER_MAX, CAPTCHA_ID_MAX
from railbook.domain.errors import InvalidInput
from railbook.domain.identity import (
    NAME_MAX,
    PASSWORD_MAX,
    PASSWORD_MIN,
    validate_id_card,
    validate_mobile,
    validate_password,
    validate_person_name,
)
from railbook.kit.clock import beijing_today


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


def _checked(check: Callable[[str], str], value: str) -> str:
    """Run a domain rule; its message becomes the field's validation message."""
    try:
        return check(value)
    except InvalidInput as exc:
        raise ValueError(exc.message) from None


# The rules the validators below check (with the domain's messages), stated in the document.
MOBILE_RULE = stated(pattern=MOBILE)
PERSON_NAME_RULE = stated(pattern=PERSON_NAME)


class RegisterIn(_Body):
    """Format characters (``Cf``) in a password are refused too, which the document does not state."""

    mobile: StrictStr = Field(max_length=11, examples=["13912345678"], json_schema_extra=MOBILE_RULE)
    password: StrictStr = Field(
        max_length=PASSWORD_MAX, json_schema_extra=stated(minLength=PASSWORD_MIN, pattern=PRINTABLE)
    )
    name: StrictStr = Field(max_length=NAME_MAX * 2, examples=["张三"], json_schema_extra=PERSON_NAME_RULE)

    @field_validator("mobile")
    @classmethod
    def _mobile(cls, v: str) -> str:
        return _checked(validate_mobile, v)

    @field_validator("password")
    @classmethod
    def _password(cls, v: str) -> str:
        return _checked(validate_password, v)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _checked(validate_person_name, v)


class RegisterOut(BaseModel):
    member_id: int


class LoginIn(_Body):
    """``captcha_id`` and ``captcha_answer`` (from ``GET /api/v1/captcha``) are needed only after
    a 403 ``CAPTCHA_REQUIRED``; each captcha is checked once."""

    mobile: StrictStr = Field(min_length=1, max_length=20)
    password: StrictStr = Field(min_length=1, max_length=PASSWORD_MAX)
    captcha_id: StrictStr | None = Field(default=None, min_length=1, max_length=CAPTCHA_ID_MAX)
    captcha_answer: StrictStr | None = Field(default=None, min_length=1, max_length=CAPTCHA_ANSWER_MAX)


class CaptchaOut(BaseModel):
    captcha_id: str
    image: str = Field(description="The captcha as a `data:image/png;base64,…` URL")


class TokenOut(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int


class MeOut(BaseModel):
    member_id: int
    mobile: str
    name: str
    role: str


PassengerType = Literal["adult", "child", "student", "disabled_military"]


class PassengerIn(_Body):
    name: StrictStr = Field(max_length=NAME_MAX * 2, examples=["李四"], json_schema_extra=PERSON_NAME_RULE)
    id_card: StrictStr = Field(
        min_length=18,
        max_length=18,
        examples=["11010519491231002X"],
        json_schema_extra=stated(pattern=ID_CARD),
        description="17 digits and a check character (0-9 or X); the birth date it carries is real and "
        "not in the future, and the check character matches (GB 11643).",
    )
    type: PassengerType = "adult"

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _checked(validate_person_name, v)

    @field_validator("id_card")
    @classmethod
    def _id_card(cls, v: str) -> str:
        return _checked(lambda card: validate_id_card(card, today=beijing_today()), v)


class PassengerOut(BaseModel):
    passenger_id: int
    name: str
    id_card_masked: str
    type: PassengerType
