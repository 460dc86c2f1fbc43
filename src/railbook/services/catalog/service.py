"""Catalog names other features import from here; the use cases live in ``stations``, ``trains`` and
``imports``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from railbook.adapters.db.timetable import SqlTimetable  # kept for other features
from railbook.services.catalog import imports
from railbook.services.catalog.imports import import_timetable_file  # kept for other features

__all__ = ["import_timetable", "import_timetable_file"]


class _OverSession:
    """The catalog's context for a caller holding a session (kept for other features)."""

    def __init__(self, session: Any) -> None:
        self.timetable = SqlTimetable.over(session.bind)


# kept for other features
async def import_timetable(session: Any, data: Mapping[str, Any]) -> dict[str, int]:
    """``imports.import_timetable`` in a transaction of its own on the session's engine."""
    return await imports.import_timetable(_OverSession(session), data)
