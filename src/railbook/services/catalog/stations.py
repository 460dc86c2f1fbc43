"""Stations of the timetable catalog."""

from __future__ import annotations

from typing import Any, Protocol

from railbook.domain.errors import StationExists
from railbook.domain.timetable import MAX_NAME_LENGTH, check_display_name, check_station_code
from railbook.services.catalog.ports import RecordConflict, StationRecord, TimetableStore

STATION_LIST_LIMIT = 200


class CatalogContext(Protocol):
    """What the catalog needs from the composition root."""

    @property
    def timetable(self) -> TimetableStore: ...


def station_view(station: StationRecord) -> dict[str, Any]:
    """A station in the API.md shape."""
    return {
        "station_id": station.station_id,
        "name": station.name,
        "code": station.code,
        "pinyin": station.pinyin,
        "city": station.city,
    }


def check_station(name: str, code: str, pinyin: str, city: str) -> None:
    """422 naming the field of a station that is not acceptable."""
    check_display_name(name, "name")
    check_station_code(code)
    if pinyin:
        check_display_name(pinyin, "pinyin", max_length=64)
    if city:
        check_display_name(city, "city", max_length=MAX_NAME_LENGTH)


async def create_station(
    container: CatalogContext, *, name: str, code: str, pinyin: str = "", city: str = ""
) -> dict[str, Any]:
    """A new station; 409 STATION_EXISTS when its name or telegraph code is taken."""
    check_station(name, code, pinyin, city)
    try:
        async with container.timetable.transaction() as tx:
            if await tx.station_taken(name, code):
                raise StationExists(
                    f"A station named {name} or coded {code} exists.",
                    details={"name": name, "code": code},
                )
            return station_view(await tx.add_station(name=name, code=code, pinyin=pinyin, city=city))
    except RecordConflict as exc:  # a concurrent insert won the race
        raise StationExists(
            f"A station named {name} or coded {code} exists.",
            details={"name": name, "code": code},
        ) from exc


async def find_stations(container: CatalogContext, q: str | None = None) -> list[dict[str, Any]]:
    """Stations whose name, code or pinyin starts with ``q`` (all of them without ``q``)."""
    return [station_view(s) for s in await container.timetable.find_stations(q, limit=STATION_LIST_LIMIT)]
