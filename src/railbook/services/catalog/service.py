"""The timetable catalog: stations and trains as administrators publish them.

Each use case owns its transaction: a train, its stops, carriages and generated seats are
written together or not at all. Sale days copy from here when they open (services/sales.py),
so edits affect only days opened afterwards.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import yaml
from sqlalchemy import delete, func, insert, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from railbook.adapters.db.models import Carriage, DailyTrain, SeatRow, Station, Train, TrainStop
from railbook.domain.errors import (
    InvalidInput,
    StationExists,
    TrainExists,
    TrainNotFound,
    TrainOnSale,
)
from railbook.domain.seating import SEAT_LETTERS, CarriageSpec
from railbook.domain.timetable import (
    MAX_NAME_LENGTH,
    StopSpec,
    TrainSpec,
    check_display_name,
    check_station_code,
    validate_train,
)
from railbook.kit.clock import utcnow

STATION_LIST_LIMIT = 200


class CatalogContext(Protocol):
    """What the catalog needs from the composition root."""

    sessionmaker: async_sessionmaker[AsyncSession]


def station_view(station: Station) -> dict[str, Any]:
    return {
        "station_id": station.id,
        "name": station.name,
        "code": station.code,
        "pinyin": station.pinyin,
        "city": station.city,
    }


def _check_station(name: str, code: str, pinyin: str, city: str) -> None:
    check_display_name(name, "name")
    check_station_code(code)
    if pinyin:
        check_display_name(pinyin, "pinyin", max_length=64)
    if city:
        check_display_name(city, "city", max_length=MAX_NAME_LENGTH)


async def create_station(
    session: AsyncSession, *, name: str, code: str, pinyin: str = "", city: str = ""
) -> dict[str, Any]:
    """A new station; 409 STATION_EXISTS when its name or telegraph code is taken."""
    _check_station(name, code, pinyin, city)
    try:
        async with session.begin():
            taken = (
                await session.execute(
                    select(Station.id).where(or_(Station.name == name, Station.code == code)).limit(1)
                )
            ).scalar_one_or_none()
            if taken is not None:
                raise StationExists(
                    f"A station named {name} or coded {code} exists.",
                    details={"name": name, "code": code},
                )
            station = Station(name=name, code=code, pinyin=pinyin, city=city)
            session.add(station)
            await session.flush()
            return station_view(station)
    except IntegrityError as exc:  # a concurrent insert won the race
        raise StationExists(
            f"A station named {name} or coded {code} exists.",
            details={"name": name, "code": code},
        ) from exc


def _prefix_pattern(q: str) -> str:
    escaped = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


async def find_stations(session: AsyncSession, q: str | None = None) -> list[dict[str, Any]]:
    """Stations whose name, code or pinyin starts with ``q`` (all of them without ``q``)."""
    query = select(Station).order_by(Station.code).limit(STATION_LIST_LIMIT)
    if q:
        query = query.where(
            or_(
                Station.name.like(_prefix_pattern(q), escape="\\"),
                Station.code.like(_prefix_pattern(q.upper()), escape="\\"),
                func.lower(Station.pinyin).like(_prefix_pattern(q.lower()), escape="\\"),
            )
        )
    async with session.begin():
        rows = (await session.execute(query)).scalars().all()
    return [station_view(s) for s in rows]


def _text(value: Any, field: str, *, optional: bool = False) -> str | None:
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
                station=_text(s.get("station"), f"stops[{i}].station") or "",
                arrives=_text(s.get("arrives"), f"stops[{i}].arrives", optional=True),
                departs=_text(s.get("departs"), f"stops[{i}].departs", optional=True),
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
                seat_class=_text(c.get("seat_class"), f"carriages[{i}].seat_class") or "",
                rows=_int(c.get("rows"), f"carriages[{i}].rows"),
            )
        )
    code = _text(data.get("code"), "code") or ""
    kind = _text(data.get("kind", code[:1]), "kind") or ""
    return TrainSpec(code=code, kind=kind, stops=tuple(stops), carriages=tuple(carriages))


async def _resolve_stations(session: AsyncSession, spec: TrainSpec) -> list[Station]:
    """The station of every stop, named by name or telegraph code; 422 naming the unknown stop."""
    wanted = {s.station for s in spec.stops}
    rows = (
        (
            await session.execute(
                select(Station).where(or_(Station.name.in_(wanted), Station.code.in_(wanted)))
            )
        )
        .scalars()
        .all()
    )
    by_key: dict[str, Station] = {}
    for row in rows:
        by_key[row.code] = row
        by_key[row.name] = row  # a name wins over a code that happens to spell it
    resolved: list[Station] = []
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
        if station.id in seen:
            raise InvalidInput(
                f"Stop {index}: {station.name} is already stop {seen[station.id]}.",
                details={
                    "stop": index,
                    "station": stop.station,
                    "field": "station",
                    "first": seen[station.id],
                },
            )
        seen[station.id] = index
        resolved.append(station)
    return resolved


async def _write_train_parts(
    session: AsyncSession, train_id: int, spec: TrainSpec, stations: Sequence[Station]
) -> None:
    """Insert the stops, carriages and generated seats of a train (bulk, within the caller's transaction)."""
    await session.execute(
        insert(TrainStop),
        [
            {
                "train_id": train_id,
                "stop_index": i,
                "station_id": stations[i].id,
                "arrives": s.arrives,
                "departs": s.departs,
                "day": s.day,
                "km": s.km,
            }
            for i, s in enumerate(spec.stops)
        ],
    )
    carriage_ids = (
        await session.execute(
            insert(Carriage).returning(Carriage.id, Carriage.carriage_index, sort_by_parameter_order=True),
            [
                {
                    "train_id": train_id,
                    "carriage_index": c.carriage,
                    "seat_class": c.seat_class,
                    "rows": c.rows,
                }
                for c in spec.carriages
            ],
        )
    ).all()
    by_index = {index: cid for cid, index in carriage_ids}
    seats = [
        {"carriage_id": by_index[c.carriage], "seat_row": row, "letter": letter, "seat_class": c.seat_class}
        for c in spec.carriages
        for row in range(1, c.rows + 1)
        for letter in SEAT_LETTERS[c.seat_class]
    ]
    await session.execute(insert(SeatRow), seats)


async def _train_id(session: AsyncSession, code: str) -> int | None:
    return (await session.execute(select(Train.id).where(Train.code == code))).scalar_one_or_none()


async def _store_train(session: AsyncSession, spec: TrainSpec, *, replace: bool) -> None:
    """Create the train, or (``replace``) overwrite an existing one's stops and carriages."""
    existing = await _train_id(session, spec.code)
    stations = await _resolve_stations(session, spec)
    if existing is not None and not replace:
        raise TrainExists(f"Train {spec.code} exists.", details={"train_code": spec.code})
    if existing is None:
        train = Train(code=spec.code, kind=spec.kind)
        session.add(train)
        await session.flush()
        train_id = train.id
    else:
        train_id = existing
        await session.execute(delete(TrainStop).where(TrainStop.train_id == train_id))
        await session.execute(
            delete(SeatRow).where(
                SeatRow.carriage_id.in_(select(Carriage.id).where(Carriage.train_id == train_id))
            )
        )
        await session.execute(delete(Carriage).where(Carriage.train_id == train_id))
        train_row = await session.get(Train, train_id)
        assert train_row is not None
        train_row.kind = spec.kind
        train_row.updated_at = utcnow()
    await _write_train_parts(session, train_id, spec, stations)


async def create_train(session: AsyncSession, spec: TrainSpec) -> dict[str, Any]:
    """Publish a whole train atomically; 409 TRAIN_EXISTS, 422 naming the offending stop/carriage."""
    validate_train(spec)
    try:
        async with session.begin():
            await _store_train(session, spec, replace=False)
    except IntegrityError as exc:
        raise TrainExists(f"Train {spec.code} exists.", details={"train_code": spec.code}) from exc
    return await get_train(session, spec.code)


async def replace_train(session: AsyncSession, code: str, spec: TrainSpec) -> dict[str, Any]:
    """Replace an existing train (days already open keep their frozen copy)."""
    if spec.code != code:
        raise InvalidInput(
            "The body's code must be the code in the path.", details={"field": "code", "value": spec.code}
        )
    validate_train(spec)
    async with session.begin():
        if await _train_id(session, code) is None:
            raise TrainNotFound(f"No train {code}.", details={"train_code": code})
        await _store_train(session, spec, replace=True)
    return await get_train(session, code)


async def get_train(session: AsyncSession, code: str) -> dict[str, Any]:
    """The train in the API.md shape, plus its seat counts per class."""
    async with session.begin():
        train = (await session.execute(select(Train).where(Train.code == code))).scalar_one_or_none()
        if train is None:
            raise TrainNotFound(f"No train {code}.", details={"train_code": code})
        stops = (
            await session.execute(
                select(TrainStop, Station)
                .join(Station, Station.id == TrainStop.station_id)
                .where(TrainStop.train_id == train.id)
                .order_by(TrainStop.stop_index)
            )
        ).all()
        carriages = (
            (
                await session.execute(
                    select(Carriage).where(Carriage.train_id == train.id).order_by(Carriage.carriage_index)
                )
            )
            .scalars()
            .all()
        )
    seats: dict[str, int] = {}
    for c in carriages:
        seats[c.seat_class] = seats.get(c.seat_class, 0) + c.rows * len(SEAT_LETTERS[c.seat_class])
    return {
        "code": train.code,
        "kind": train.kind,
        "stops": [stop_view(stop, station) for stop, station in stops],
        "carriages": [
            {"carriage": c.carriage_index, "seat_class": c.seat_class, "rows": c.rows} for c in carriages
        ],
        "seats": seats,
    }


async def list_trains(session: AsyncSession) -> list[dict[str, Any]]:
    """Every published train with its first and last station and stop count, by code."""
    first = TrainStop.__table__.alias("first_stop")
    last = TrainStop.__table__.alias("last_stop")
    first_station = Station.__table__.alias("first_station")
    last_station = Station.__table__.alias("last_station")
    n_stops = (
        select(
            TrainStop.train_id, func.count().label("n"), func.max(TrainStop.stop_index).label("last_index")
        )
        .group_by(TrainStop.train_id)
        .subquery()
    )
    query = (
        select(Train.code, Train.kind, first_station.c.name, last_station.c.name, n_stops.c.n)
        .join(n_stops, n_stops.c.train_id == Train.id)
        .join(first, (first.c.train_id == Train.id) & (first.c.stop_index == 0))
        .join(first_station, first_station.c.id == first.c.station_id)
        .join(last, (last.c.train_id == Train.id) & (last.c.stop_index == n_stops.c.last_index))
        .join(last_station, last_station.c.id == last.c.station_id)
        .order_by(Train.code)
    )
    async with session.begin():
        rows = (await session.execute(query)).all()
    return [{"code": c, "kind": k, "from": a, "to": b, "stops": n} for c, k, a, b, n in rows]


def stop_view(stop: TrainStop, station: Station) -> dict[str, Any]:
    view: dict[str, Any] = {"station": station.name, "station_code": station.code}
    if stop.arrives is not None:
        view["arrives"] = stop.arrives
    if stop.departs is not None:
        view["departs"] = stop.departs
    if stop.day:
        view["day"] = stop.day
    view["km"] = stop.km
    return view


async def delete_train(session: AsyncSession, code: str, *, today: dt.date) -> None:
    """Remove a train from the timetable; 409 TRAIN_ON_SALE while any day from today on is open."""
    async with session.begin():
        train_id = await _train_id(session, code)
        if train_id is None:
            raise TrainNotFound(f"No train {code}.", details={"train_code": code})
        open_days = (
            (
                await session.execute(
                    select(DailyTrain.service_date)
                    .where(DailyTrain.train_code == code, DailyTrain.service_date >= today)
                    .order_by(DailyTrain.service_date)
                )
            )
            .scalars()
            .all()
        )
        if open_days:
            raise TrainOnSale(
                f"Train {code} is on sale for {len(open_days)} day(s).",
                details={"train_code": code, "dates": [d.isoformat() for d in open_days]},
            )
        await session.execute(
            delete(SeatRow).where(
                SeatRow.carriage_id.in_(select(Carriage.id).where(Carriage.train_id == train_id))
            )
        )
        await session.execute(delete(Carriage).where(Carriage.train_id == train_id))
        await session.execute(delete(TrainStop).where(TrainStop.train_id == train_id))
        await session.execute(delete(Train).where(Train.id == train_id))


def _read_timetable(path: Path) -> dict[str, Any]:
    text = path.read_text(encoding="utf-8")
    data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    if not isinstance(data, dict):
        raise InvalidInput("A timetable file holds an object with 'stations' and 'trains'.")
    return data


async def import_timetable(session: AsyncSession, data: Mapping[str, Any]) -> dict[str, int]:
    """Stations (kept when they exist) and trains (replaced when they exist), in one transaction."""
    stations = data.get("stations") or []
    trains = data.get("trains") or []
    if not isinstance(stations, list) or not isinstance(trains, list):
        raise InvalidInput("'stations' and 'trains' must be lists.")
    specs = [train_spec_from_mapping(t) for t in trains]
    for spec in specs:
        try:
            validate_train(spec)
        except InvalidInput as exc:
            raise InvalidInput(
                f"Train {spec.code}: {exc.message}", details={"train_code": spec.code, **exc.details}
            ) from exc
    added_stations = 0
    created = replaced = 0
    async with session.begin():
        known = (await session.execute(select(Station.name, Station.code))).all()
        names = {n for n, _ in known}
        codes = {c for _, c in known}
        new_rows = []
        for i, s in enumerate(stations):
            if not isinstance(s, Mapping):
                raise InvalidInput(f"Station {i} is not an object.", details={"station": i})
            name = _text(s.get("name"), f"stations[{i}].name") or ""
            code = _text(s.get("code"), f"stations[{i}].code") or ""
            pinyin = _text(s.get("pinyin", ""), f"stations[{i}].pinyin") or ""
            city = _text(s.get("city", ""), f"stations[{i}].city") or ""
            _check_station(name, code, pinyin, city)
            if name in names or code in codes:
                continue
            names.add(name)
            codes.add(code)
            new_rows.append({"name": name, "code": code, "pinyin": pinyin, "city": city})
        if new_rows:
            await session.execute(insert(Station), new_rows)
            added_stations = len(new_rows)
        for spec in specs:
            exists = await _train_id(session, spec.code) is not None
            await _store_train(session, spec, replace=True)
            if exists:
                replaced += 1
            else:
                created += 1
    return {"stations_added": added_stations, "trains_created": created, "trains_replaced": replaced}


async def import_timetable_file(container: CatalogContext, path: Path) -> dict[str, int]:
    """``railbook timetable import FILE``: a JSON or YAML file of stations and trains (idempotent)."""
    data = await asyncio.to_thread(_read_timetable, Path(path))
    async with container.sessionmaker() as session:
        return await import_timetable(session, data)


async def catalog_is_empty(session: AsyncSession) -> bool:
    """True when no station and no train has been published yet."""
    async with session.begin():
        stations = (await session.execute(select(func.count()).select_from(Station))).scalar_one()
        trains = (await session.execute(select(func.count()).select_from(Train))).scalar_one()
    return stations == 0 and trains == 0
