"""Every error code has a Chinese message: each code class of domain/errors.py (and the order state
machine's), and every code the HTTP layer answers by itself."""

from __future__ import annotations

import pytest

from railbook.api.errors import HTTP_CODES
from railbook.api.messages_zh import MESSAGES_ZH
from railbook.domain import errors
from railbook.domain.errors import DomainError
from railbook.domain.order_state import IllegalTransition

CODE_CLASSES = sorted(
    {c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, DomainError)}
    | {IllegalTransition},
    key=lambda c: c.__name__,
)


def _chinese(text: str) -> bool:
    return any("\u4e00" <= ch <= "\u9fff" for ch in text)


@pytest.mark.parametrize("cls", CODE_CLASSES, ids=lambda c: c.__name__)
def test_every_domain_error_code_has_a_chinese_message(cls: type[DomainError]) -> None:
    assert _chinese(MESSAGES_ZH.get(cls.code, "")), cls.code


@pytest.mark.parametrize("code", sorted(HTTP_CODES.values()))
def test_every_http_level_code_has_a_chinese_message(code: str) -> None:
    assert _chinese(MESSAGES_ZH.get(code, "")), code


def test_the_table_names_only_codes_that_exist() -> None:
    known = {c.code for c in CODE_CLASSES} | set(HTTP_CODES.values())
    assert set(MESSAGES_ZH) <= known, set(MESSAGES_ZH) - known
