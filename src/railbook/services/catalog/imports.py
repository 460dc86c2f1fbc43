"""Timetable files: stations and trains imported together, idempotently."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from railbook.domain.errors import InvalidInput
from railbook.domain.timetable import validate_train
from railbook.services.catalog.stations import CatalogContext, check_station
from railbook.services.catalog.trains import store_train, text_field, train_spec_from_mapping


def _read_timetable(path: Path) -> dict[str, Any]:
    text = path.read_text(encoding="utf-8")
    data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    if not isinstance(data, dict):
        raise InvalidInput("A timetable file holds an object with 'stations' and 'trains'.")
    return data


async def import_timetable(container: CatalogContext, data: Mapping[str, Any]) -> dict[str, int]:
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
    async with container.timetable.transaction() as tx:
        known = await tx.station_keys()
        names = {n for n, _ in known}
        codes = {c for _, c in known}
        new_rows = []
        for i, s in enumerate(stations):
            if not isinstance(s, Mapping):
                raise InvalidInput(f"Station {i} is not an object.", details={"station": i})
            name = text_field(s.get("name"), f"stations[{i}].name") or ""
            code = text_field(s.get("code"), f"stations[{i}].code") or ""
            pinyin = text_field(s.get("pinyin", ""), f"stations[{i}].pinyin") or ""
            city = text_field(s.get("city", ""), f"stations[{i}].city") or ""
            check_station(name, code, pinyin, city)
            if name in names or code in codes:
                continue
            names.add(name)
            codes.add(code)
            new_rows.append({"name": name, "code": code, "pinyin": pinyin, "city": city})
        if new_rows:
            await tx.add_stations(new_rows)
            added_stations = len(new_rows)
        for spec in specs:
            exists = await tx.train_id(spec.code) is not None
            await store_train(tx, spec, replace=True)
            if exists:
                replaced += 1
            else:
                created += 1
    return {"stations_added": added_stations, "trains_created": created, "trains_replaced": replaced}


async def import_timetable_file(container: CatalogContext, path: Path) -> dict[str, int]:
    """``railbook timetable import FILE``: a JSON or YAML file of stations and trains (idempotent)."""
    data = await asyncio.to_thread(_read_timetable, Path(path))
    return await import_timetable(container, data)


async def catalog_is_empty(container: CatalogContext) -> bool:
    """True when no station and no train has been published yet."""
    return await container.timetable.is_empty()
