"""Transfers (中转): journeys from one station to another with one change of train at the same
station, for when no through train suits.

The first legs are every train boarded at ``from`` on the date, to any station; the second legs every
train to ``to`` boarded at any station that day or the next (a change after midnight). Both come from
the route index (cached per key like any search), both are subject to the sale cut-off, and a pair
qualifies when the second train leaves the change station at least ``TRANSFER_MIN_MINUTES`` and at
most six hours after the first arrives, and both legs have seats left in some class. Answers are the
earliest arrivals first (then the shortest), at most 20; each leg reads as a search result and is
booked as its own order.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from railbook.domain.errors import SameStation
from railbook.domain.timetable import MINUTES_PER_DAY
from railbook.services.search.answers import TrainOffer
from railbook.services.search.routes import Leg

if TYPE_CHECKING:
    from railbook.services.search.service import SearchService

MAX_WAIT_MINUTES = 6 * 60
TRANSFER_LIMIT = 20


@dataclass(frozen=True, slots=True)
class Transfer:
    station: str
    wait_minutes: int
    duration_minutes: int
    legs: tuple[TrainOffer, TrainOffer]


def _minutes(leg: Leg, key: str) -> int:
    """Minutes since a fixed epoch (day ordinal) of a leg's departure (``dep_min``) or arrival."""
    return dt.date.fromisoformat(leg["sd"]).toordinal() * MINUTES_PER_DAY + int(leg[key])


async def find_transfers(
    service: SearchService, from_term: str, to_term: str, date: dt.date
) -> list[Transfer]:
    """Journeys with one change from ``from_term`` to ``to_term`` boarded on ``date`` (see the module
    docstring); 404 STATION_NOT_FOUND and 422 DATE_NOT_ON_SALE as search answers them."""
    service.check_date(date)
    from_refs, to_refs = await service.stations.resolve([(from_term, "from"), (to_term, "to")])
    from_ids = sorted({r.id for r in from_refs})
    to_ids = sorted({r.id for r in to_refs})
    if from_ids == to_ids:
        raise SameStation("from and to name the same station.", details={"from": from_term, "to": to_term})
    ends = {r.name for r in from_refs} | {r.name for r in to_refs}
    closed = service.sale_closed_check(date)
    firsts = [
        leg
        for leg in await service.route_index.legs(date, from_ids, None)
        if leg["ts"] not in ends and not closed(leg)
    ]
    if not firsts:
        return []
    seconds: dict[str, list[tuple[Leg, dt.date]]] = defaultdict(list)
    for boarding in (date, date + dt.timedelta(days=1)):
        closed_then = service.sale_closed_check(boarding)
        for leg in await service.route_index.legs(boarding, None, to_ids):
            if leg["fs"] not in ends and not closed_then(leg):
                seconds[leg["fs"]].append((leg, boarding))
    shortest = service.settings.transfer_min_minutes
    pairs: list[tuple[int, int, int, Leg, Leg, dt.date]] = []
    for first in firsts:
        arrives = _minutes(first, "arr_min")
        for second, boarding in seconds.get(first["ts"], ()):
            wait = _minutes(second, "dep_min") - arrives
            if second["code"] != first["code"] and shortest <= wait <= MAX_WAIT_MINUTES:
                end = _minutes(second, "arr_min")
                pairs.append((end, end - _minutes(first, "dep_min"), wait, first, second, boarding))
    if not pairs:
        return []
    pairs.sort(key=lambda p: (p[0], p[1], p[3]["code"], p[4]["code"]))
    legs = list({id(leg): leg for p in pairs for leg in (p[3], p[4])}.values())
    counts, _, _ = await service.counts.for_legs(legs)
    left = {id(leg): remaining for leg, remaining in zip(legs, counts, strict=True)}
    found: list[Transfer] = []
    for _, duration, wait, first, second, boarding in pairs:
        if not any(left[id(first)].values()) or not any(left[id(second)].values()):
            continue
        offers = (
            service.offer(first, left[id(first)], date),
            service.offer(second, left[id(second)], boarding),
        )
        found.append(Transfer(first["ts"], wait, duration, offers))
        if len(found) == TRANSFER_LIMIT:
            break
    return found
