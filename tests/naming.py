"""Unique station and train codes for one test process.

Every test that publishes stations or trains draws its codes here, so tests sharing a database never
collide (telegraph codes have only 26³ values: independent random picks would meet by the birthday
bound after a few hundred stations)."""

from __future__ import annotations

import itertools
import random

_stations = itertools.count(random.randrange(26**3))
_trains = itertools.count(random.randrange(1, 50_000))
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def station_code() -> str:
    """Three capital letters no other station of this test process has."""
    n = next(_stations) % 26**3
    return "".join(_LETTERS[(n // 26**k) % 26] for k in (2, 1, 0))


def train_code(kind: str = "G") -> str:
    """A train code (``G12345``) whose number no other train of this test process has."""
    return f"{kind}{next(_trains) % 99_999 + 1}"
