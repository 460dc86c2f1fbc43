"""Every error code has a Chinese message: each code class of domain/errors.py, every other
``DomainError`` subclass anywhere in the package (the order state machine's, the fees', the payment
callback's), and every code the HTTP layer answers by itself."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import railbook
from railbook.api.errors import HTTP_CODES
from railbook.api.messages_zh import MESSAGES_ZH
from railbook.domain import errors
from railbook.domain.errors import DomainError

# Imported for their error classes; the load generators and the pages define none.
SKIPPED = ("railbook.bench", "railbook.web", "railbook.__main__")


def _import_package() -> None:
    for module in pkgutil.walk_packages(railbook.__path__, "railbook."):
        if not module.name.startswith(SKIPPED):
            importlib.import_module(module.name)


def _subclasses(cls: type[DomainError]) -> set[type[DomainError]]:
    found = set(cls.__subclasses__())
    for sub in list(found):
        found |= _subclasses(sub)
    return found


_import_package()
CODE_CLASSES = sorted(
    {c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, DomainError)}
    | {c for c in _subclasses(DomainError) if c.__module__.startswith("railbook.")},
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
