"""Stations as a passenger types them into a station box: by name, pinyin (``beijingnan``), initials
(``bjn``) or telegraph code (``VNP``), each a case-insensitive prefix.

Pinyin comes from the catalog when an administrator gave one, else from ``pypinyin`` (the sample
network and most admin-created stations carry none); initials always come from ``pypinyin``, whose
phrase dictionary reads place names right (重庆 → chongqing, not zhongqing). Only this lookup takes
pinyin and initials: search, seat maps and orders still name a station by name, code or city.
"""

from __future__ import annotations

import bisect
import functools
from collections.abc import Iterable
from dataclasses import dataclass

from pypinyin import lazy_pinyin

SUGGESTION_LIMIT = 20


@dataclass(frozen=True, slots=True)
class StationName:
    """A station with every spelling the lookup matches."""

    name: str
    code: str
    pinyin: str
    initials: str
    city: str


@functools.lru_cache(maxsize=65536)
def spell(name: str, pinyin: str = "") -> tuple[str, str]:
    """``(pinyin, initials)`` of a station name, lower case: the catalog's pinyin when it has one
    (spaces and apostrophes dropped), else the generated one; initials are the first letters of the
    syllables (a run of letters or digits in the name counts as one syllable)."""
    syllables = [s.strip().lower() for s in lazy_pinyin(name) if s.strip()]
    generated = "".join(syllables)
    given = "".join(ch for ch in pinyin.lower() if ch.isalnum())
    return given or generated, "".join(s[0] for s in syllables)


class StationNameIndex:
    """Every spelling of every station in one sorted list: a prefix is a range of it (bisect)."""

    def __init__(self, stations: Iterable[StationName]) -> None:
        keyed: dict[str, dict[str, StationName]] = {}
        for s in stations:
            for key in {s.name.lower(), s.code.lower(), s.pinyin, s.initials}:
                if key:
                    keyed.setdefault(key, {})[s.code] = s
        self._keys = sorted(keyed)
        self._stations = [tuple(sorted(keyed[k].values(), key=lambda s: s.code)) for k in self._keys]

    def __len__(self) -> int:
        return len(self._keys)

    def starting_with(self, prefix: str, limit: int = SUGGESTION_LIMIT) -> list[StationName]:
        """Stations with a spelling that starts with ``prefix`` (case-insensitive): those matched
        exactly first, then by the length of the spelling matched (``bj`` finds 北京 before
        北京南), then by telegraph code; each station once, at most ``limit``."""
        q = prefix.strip().lower()
        if not q:
            return []
        found: dict[str, tuple[int, str, StationName]] = {}
        i = bisect.bisect_left(self._keys, q)
        while i < len(self._keys) and self._keys[i].startswith(q):
            key = self._keys[i]
            for s in self._stations[i]:
                rank = (len(key), s.code, s)
                if s.code not in found or rank[:2] < found[s.code][:2]:
                    found[s.code] = rank
            i += 1
        ranked = sorted(found.values(), key=lambda r: (r[0], r[1]))
        return [s for _, _, s in ranked[:limit]]


def station_names(rows: Iterable[tuple[str, str, str, str]]) -> StationNameIndex:
    """The index of stations given as ``(name, code, pinyin, city)`` (CPU-bound: run it off the
    event loop for a large catalog)."""
    stations = []
    for name, code, pinyin, city in rows:
        spelled, initials = spell(name, pinyin)
        stations.append(StationName(name, code, spelled, initials, city))
    return StationNameIndex(stations)


EMPTY_INDEX = StationNameIndex(())
