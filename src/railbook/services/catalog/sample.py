"""Timetables that ship with railbook: the sample network of real lines, and a synthetic network of any
size for measuring how long opening a sale day takes."""

from __future__ import annotations

import asyncio
import json
import random
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from railbook.services.catalog.imports import import_timetable
from railbook.services.catalog.stations import CatalogContext

SAMPLE_RESOURCE = "sample_network.yaml"

# Syllables for plausible synthetic place names, and the suffixes stations of one city take.
_PLACE_CHARS = "安宁平阳江山河城州德兴华明新庆昌丰泰清远长南北东西海湖林原川口台桥溪峰"
_SUFFIXES = ("", "东", "西", "南", "北")
_CONSISTS: dict[str, list[tuple[str, int, int]]] = {
    "G": [("business", 1, 10), ("first", 2, 14), ("second", 9, 18)],  # 30 + 112 + 810 = 952
    "D": [("first", 2, 13), ("second", 10, 18)],  # 104 + 900 = 1,004
    "K": [("soft_sleeper", 2, 9), ("hard_sleeper", 6, 11), ("hard_seat", 5, 24)],  # 72 + 396 + 600
}
_SPEED = {"G": 300, "D": 230, "K": 90}


def _read_sample() -> dict[str, Any]:
    text = resources.files("railbook").joinpath("data", SAMPLE_RESOURCE).read_text(encoding="utf-8")
    data: dict[str, Any] = yaml.safe_load(text)
    return data


async def sample_network() -> dict[str, Any]:
    """The bundled sample network (real station names and telegraph codes)."""
    return await asyncio.to_thread(_read_sample)


async def load_sample_network(container: CatalogContext) -> dict[str, int]:
    """Import the sample network (idempotent)."""
    return await import_timetable(container, await sample_network())


def _station_names(rng: random.Random, count: int) -> list[dict[str, str]]:
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < count:
        base = rng.choice(_PLACE_CHARS) + rng.choice(_PLACE_CHARS)
        for suffix in _SUFFIXES:
            if base + suffix not in seen and len(names) < count:
                seen.add(base + suffix)
                names.append(base + suffix)
                break
    letters = [
        a + b + c for a in "ABCDEFGHJKLMNPQRSTWXY" for b in "ABCDEFGHJKLMNPQRSTWXY" for c in "FGHKNPQW"
    ]
    codes = rng.sample(letters, count)
    return [
        {"name": n, "code": c, "pinyin": "", "city": n.rstrip("东西南北")}
        for n, c in zip(names, codes, strict=True)
    ]


def _clock(minutes: int) -> str:
    return f"{minutes // 60 % 24:02d}:{minutes % 60:02d}"


def generated_network(trains: int, seed: int = 7) -> dict[str, Any]:
    """A synthetic but plausible network: corridors of 40 stations, ``trains`` trains of 10-20 stops
    and about 1,000 seats each (G, D and a few K), departures spread over the day."""
    rng = random.Random(seed)
    n_lines = max(1, trains // 25)
    per_line = 40
    stations = _station_names(rng, n_lines * per_line)
    lines: list[list[tuple[str, int]]] = []
    for line in range(n_lines):
        km = 0
        points: list[tuple[str, int]] = []
        for station in stations[line * per_line : (line + 1) * per_line]:
            points.append((station["name"], km))
            km += rng.randint(25, 90)
        lines.append(points)
    numbers: dict[str, int] = {"G": 1, "D": 1, "K": 1}
    result = []
    for _ in range(trains):
        kind = rng.choices(("G", "D", "K"), weights=(6, 3, 1))[0]
        route = lines[rng.randrange(n_lines)]
        n_stops = rng.randint(10, 20)
        picked = sorted(rng.sample(range(len(route)), n_stops))
        seq = [route[i] for i in picked]
        if rng.random() < 0.5:
            total = route[-1][1]
            seq = [(name, total - km) for name, km in reversed(seq)]
        t = rng.randint(6 * 60, 20 * 60)
        stops: list[dict[str, Any]] = []
        origin_km = seq[0][1]
        for i, (name, km) in enumerate(seq):
            stop: dict[str, Any] = {"station": name}
            if i > 0:
                t += round((km - seq[i - 1][1]) / _SPEED[kind] * 60) + 4
                stop["arrives"] = _clock(t)
                if t // 1440:
                    stop["day"] = t // 1440
            if i < len(seq) - 1:
                if i > 0:
                    t += 2 if kind != "K" else 6
                stop["departs"] = _clock(t)
            stop["km"] = km - origin_km
            stops.append(stop)
        carriages: list[dict[str, Any]] = []
        for seat_class, count, rows in _CONSISTS[kind]:
            for _ in range(count):
                carriages.append({"carriage": len(carriages) + 1, "seat_class": seat_class, "rows": rows})
        code = f"{kind}{numbers[kind]}"
        numbers[kind] += 1
        result.append({"code": code, "kind": kind, "stops": stops, "carriages": carriages})
    return {"stations": stations, "trains": result}


def write_generated_network(path: Path, trains: int = 500, seed: int = 7) -> Path:
    """Write a synthetic network as JSON (``railbook timetable generate``)."""
    path = Path(path)
    path.write_text(json.dumps(generated_network(trains, seed), ensure_ascii=False), encoding="utf-8")
    return path
