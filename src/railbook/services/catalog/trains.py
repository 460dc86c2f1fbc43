"""Trains of the timetable catalog: published whole (stops, carriages and generated seats together or
not at all). Sale days copy from here when they open, so edits affect only days opened afterwards."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from railbook.domain.errors import InvalidInput, TrainExists, TrainNotFound, TrainOnSale
from railbook.domain.seating import SEAT_LETTERS, CarriageSpec
from railbook.domain.timetable import StopSpec, TrainSpec, validate_train
from railbook.services.catalog.ports import RecordConflict, StopRecord, TimetableWrite
from railbook.services.catalog.stations import CatalogContext


def text_field(value: Any, field: str, *, optional: bool = False) -> str | None:
    """``value`` if it is a string (or None when ``optional``); 422 naming ``field`` otherwise."""
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"{field} must be a string.", details={"field": field})
    return value


def _int(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{field} must be an integer.", details={"field": field})
    return value


def train_spec_from_mapping(data: Mapping[str, Any]) -> TrainSpec:
    """A TrainSpec from the API.md train shape (as read from an import file)."""
    if not isinstance(data, Mapping):
        raise InvalidInput("A train is an object.", details={"field": "train"})
    stops_data = data.get("stops")
    carriages_data = data.get("carriages")
    if not isinstance(stops_data, list) or not isinstance(carriages_data, list):
        raise InvalidInput("A train needs lists of stops and carriages.", details={"field": "stops"})
    stops = []
    for i, s in enumerate(stops_data):
        if not isinstance(s, Mapping):
            raise InvalidInput(f"Stop {i} is not an object.", details={"stop": i})
        stops.append(
            StopSpec(
                station=text_field(s.get("station"), f"stops[{i}].station") or "",
                arrives=text_field(s.get("arrives"), f"stops[{i}].arrives", optional=True),
                departs=text_field(s.get("departs"), f"stops[{i}].departs", optional=True),
                km=_int(s.get("km"), f"stops[{i}].km"),
                day=_int(s.get("day", 0), f"stops[{i}].day"),
            )
        )
    carriages = []
    for i, c in enumerate(carriages_data):
        if not isinstance(c, Mapping):
            raise InvalidInput(f"Carriage {i} is not an object.", details={"carriage": i})
        carriages.append(
            CarriageSpec(
                carriage=_int(c.get("carriage"), f"carriages[{i}].carriage"),
                seat_class=text_field(c.get("seat_class"), f"carriages[{i}].seat_class") or "",
                rows=_int(c.get("rows"), f"carriages[{i}].rows"),
            )
        )
    code = text_field(data.get("code"), "code") or ""
    kind = text_field(data.get("kind", code[:1]), "kind") or ""
    return TrainSpec(code=code, kind=kind, stops=tuple(stops), carriages=tuple(carriages))


async def _resolve_stations(tx: TimetableWrite, spec: TrainSpec) -> list[int]:
    """The station id of every stop, named by name or telegraph code; 422 naming the unknown stop."""
    by_key: dict[str, tuple[int, str]] = {}
    for row in await tx.stations_named({s.station for s in spec.stops}):
        by_key[row.code] = (row.station_id, row.name)
        by_key[row.name] = (row.station_id, row.name)  # a name wins over a code that happens to spell it
    resolved: list[int] = []
    seen: dict[int, int] = {}
    for index, stop in enumerate(spec.stops):
        station = by_key.get(stop.station)
        if station is None:
            raise InvalidInput(
                f"Stop {index}: no station {stop.station!r}.",
                details={
                    "stop": index,
                    "station": stop.station,
                    "field": "station",
                    "reason": "STATION_NOT_FOUND",
                },
            )
        station_id, name = station
        if station_id in seen:
            raise InvalidInput(
                f"Stop {index}: {name} is already stop {seen[station_id]}.",
                details={
                    "stop": index,
                    "station": stop.station,
                    "field": "station",
                    "first": seen[station_id],
                },
            )
        seen[station_id] = index
        resolved.append(station_id)
    return resolved


async def store_train(tx: TimetableWrite, spec: TrainSpec, *, replace: bool) -> None:
    """Create the train, or (``replace``) overwrite an existing one's stops and carriages."""
    existing = await tx.train_id(spec.code)
    stations = await _resolve_stations(tx, spec)
    if existing is not None and not replace:
        raise TrainExists(f"Train {spec.code} exists.", details={"train_code": spec.code})
    if existing is None:
        train_id = await tx.add_train(spec.code, spec.kind)
    else:
        train_id = existing
        await tx.clear_train(train_id, spec.kind)
    await tx.write_train_parts(train_id, spec, stations)


async def create_train(container: CatalogContext, spec: TrainSpec) -> dict[str, Any]:
    """Publish a whole train atomically; 409 TRAIN_EXISTS, 422 naming the offending stop/carriage."""
    validate_train(spec)
    try:
        async with container.timetable.transaction() as tx:
            await store_train(tx, spec, replace=False)
    except RecordConflict as exc:
        raise TrainExists(f"Train {spec.code} exists.", details={"train_code": spec.code}) from exc
    return await get_train(container, spec.code)


async def replace_train(container: CatalogContext, code: str, spec: TrainSpec) -> dict[str, Any]:
    """Replace an existing train (days already open keep their frozen copy)."""
    if spec.code != code:
        raise InvalidInput(
            "The body's code must be the code in the path.", details={"field": "code", "value": spec.code}
        )
    validate_train(spec)
    async with container.timetable.transaction() as tx:
        if await tx.train_id(code) is None:
            raise TrainNotFound(f"No train {code}.", details={"train_code": code})
        await store_train(tx, spec, replace=True)
    return await get_train(container, code)


def stop_view(stop: StopRecord) -> dict[str, Any]:
    """A stop in the API.md shape (absent times and a zero day left out)."""
    view: dict[str, Any] = {"station": stop.station, "station_code": stop.station_code}
    if stop.arrives is not None:
        view["arrives"] = stop.arrives
    if stop.departs is not None:
        view["departs"] = stop.departs
    if stop.day:
        view["day"] = stop.day
    view["km"] = stop.km
    return view


async def get_train(container: CatalogContext, code: str) -> dict[str, Any]:
    """The train in the API.md shape, plus its seat counts per class."""
    train = await container.timetable.train(code)
    if train is None:
        raise TrainNotFound(f"No train {code}.", details={"train_code": code})
    seats: dict[str, int] = {}
    for c in train.carriages:
        seats[c.seat_class] = seats.get(c.seat_class, 0) + c.rows * len(SEAT_LETTERS[c.seat_class])
    return {
        "code": train.code,
        "kind": train.kind,
        "stops": [stop_view(stop) for stop in train.stops],
        "carriages": [
            {"carriage": c.carriage, "seat_class": c.seat_class, "rows": c.rows} for c in train.carriages
        ],
        "seats": seats,
    }


async def list_trains(container: CatalogContext) -> list[dict[str, Any]]:
    """Every published train with its first and last station and stop count, by code."""
    return [
        {"code": t.code, "kind": t.kind, "from": t.first, "to": t.last, "stops": t.stops}
        for t in await container.timetable.train_summaries()
    ]


async def delete_train(container: CatalogContext, code: str, *, today: dt.date) -> None:
    """Remove a train from the timetable; 409 TRAIN_ON_SALE while any day from today on is open."""
    async with container.timetable.transaction() as tx:
        train_id = await tx.train_id(code)
        if train_id is None:
            raise TrainNotFound(f"No train {code}.", details={"train_code": code})
        open_days = await tx.open_dates(code, since=today)
        if open_days:
            raise TrainOnSale(
                f"Train {code} is on sale for {len(open_days)} day(s).",
                details={"train_code": code, "dates": [d.isoformat() for d in open_days]},
            )
        await tx.delete_train(train_id)
