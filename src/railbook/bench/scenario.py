"""The flash-sale scenario and its set-up, over HTTP only: stations, trains and the sale day through
the admin API, members through ``/auth/register``, their passengers through ``/passengers``.

The default is a 12306-class sale: 1,500 members (5 passengers each) after 4 trains of 30 stops and
1,200 seats on one day; every size scales down for a smoke test.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from railbook.bench.site import ADMIN_MOBILE, ADMIN_PASSWORD
from railbook.domain.identity import compose_id_card
from railbook.kit.clock import beijing_today

MEMBER_PASSWORD = "bench-pass-1"
SECOND_ROWS = 20  # a second-class carriage: 20 rows of A B C D F


@dataclass(frozen=True)
class Scenario:
    """The sizes of a run."""

    members: int = 1500
    trains: int = 4
    stops: int = 30
    seats: int = 1200
    passengers_per_member: int = 5
    # Eight days or more ahead: refunds carry no fee, so paid totals = payments - refunds exactly.
    days_ahead: int = 10
    seed: int = 7


@dataclass(frozen=True)
class Rider:
    """A member of the crowd: mobile number and the ids of their passengers."""

    mobile: str
    passengers: list[int]


@dataclass(frozen=True)
class Plan:
    """What the load processes need to play the crowd."""

    nodes: list[tuple[str, int]]  # every API node (host, port): connections spread round-robin over them
    date: str
    stations: list[str]
    trains: list[str]
    classes: list[str]
    seats_per_train: dict[str, int]
    riders: list[Rider] = field(default_factory=list)

    def share(self, k: int, n: int) -> Plan:
        """The plan of load process ``k`` of ``n``: a disjoint slice of the riders."""
        return Plan(
            self.nodes,
            self.date,
            self.stations,
            self.trains,
            self.classes,
            self.seats_per_train,
            self.riders[k::n],
        )


def id_card(prefix: str, n: int) -> str:
    """The ``n``-th of a series of distinct valid resident ID numbers of adults, in a region of the
    members' mobile ``prefix``: no two passengers registered are one person (one person, one seat at
    a time is decided by the ID number), not even across runs against one server."""
    region = f"9{int(prefix):05d}"[-6:]
    return compose_id_card(region, dt.date(1960, 1, 1) + dt.timedelta(days=n // 1000), n % 1000)


def carriages(seats: int) -> list[dict[str, Any]]:
    """About ``seats`` seats: one first-class carriage (a twelfth of them), the rest second class."""
    first_rows = max(1, min(30, seats // 12 // 4))
    out = [{"carriage": 1, "seat_class": "first", "rows": first_rows}]
    left = seats - 4 * first_rows
    while left >= 5:
        rows = min(SECOND_ROWS, left // 5)
        out.append({"carriage": len(out) + 1, "seat_class": "second", "rows": rows})
        left -= 5 * rows
    return out


def _train(code: str, stations: list[str], hour: int, layout: list[dict[str, Any]]) -> dict[str, Any]:
    stops = []
    for k, name in enumerate(stations):
        minute = hour * 60 + 20 * k
        stop: dict[str, Any] = {"station": name, "km": 40 * k}
        if k:
            stop["arrives"] = f"{(minute - 2) // 60:02d}:{(minute - 2) % 60:02d}"
        if k < len(stations) - 1:
            stop["departs"] = f"{minute // 60:02d}:{minute % 60:02d}"
        stops.append(stop)
    return {"code": code, "kind": "G", "stops": stops, "carriages": layout}


def _name(k: int) -> str:
    """A person's name of letters only (the API refuses digits in names)."""
    digits = "零一二三四五六七八九"
    return "旅客" + "".join(digits[int(d)] for d in str(k))


async def post_json(
    client: httpx.AsyncClient,
    path: str,
    body: Any,
    headers: dict[str, str] | None = None,
    also_fine: tuple[int, ...] = (),
) -> Any:
    """POST, retried after ``Retry-After`` while the server sheds load (429/503), after a 500 and on a
    dropped keep-alive connection; the JSON answer (None for a status in ``also_fine``)."""
    for _ in range(100):
        try:
            answer = await client.post(path, json=body, headers=headers)
        except httpx.TransportError:
            await asyncio.sleep(0.2)
            continue
        if answer.status_code in also_fine:
            return None
        if answer.status_code not in (429, 500, 503):
            return await _ok(answer)
        # 500 is retried too: a server short of database connections (a PostgreSQL shared with other
        # work) has been seen answering it; the set-up is not what is measured.
        await asyncio.sleep(float(answer.headers.get("retry-after", "0.5")))
    raise RuntimeError(f"POST {path}: no answer after 100 tries")


async def _ok(answer: httpx.Response) -> Any:
    if answer.status_code >= 400:
        raise RuntimeError(f"set-up request refused: {answer.status_code} {answer.text[:300]}")
    return answer.json()


async def register_members(
    client: httpx.AsyncClient, count: int, passengers: int, prefix: str = "166"
) -> list[tuple[Rider, str]]:
    """``count`` members registered through the API, each with ``passengers`` passengers: the riders
    and the access token each got by logging in."""
    sem = asyncio.Semaphore(24)

    async def member(k: int) -> tuple[Rider, str]:
        mobile = f"{prefix}{k:0{11 - len(prefix)}d}"
        async with sem:
            body = {"mobile": mobile, "password": MEMBER_PASSWORD, "name": _name(k)}
            # A repeat after a dropped connection may find the first registration done.
            await post_json(client, "/api/v1/auth/register", body, also_fine=(409,))
            got = await post_json(
                client, "/api/v1/auth/login", {"mobile": mobile, "password": MEMBER_PASSWORD}
            )
            auth = {"Authorization": f"Bearer {got['access_token']}"}
            pids = []
            for j in range(passengers):
                card = id_card(prefix, k * passengers + j)
                body = {"name": _name(k * 10 + j), "id_card": card, "type": "adult"}
                pids.append(int((await post_json(client, "/api/v1/passengers", body, auth))["passenger_id"]))
        return Rider(mobile, pids), str(got["access_token"])

    return list(await asyncio.gather(*(member(k) for k in range(count))))


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 80


async def prepare(url: str, scenario: Scenario, say: Any = print, nodes: list[str] | None = None) -> Plan:
    """Trains on sale and members with passengers, all through the API at ``url``; the crowd will talk to
    ``nodes`` (every API node; default ``url`` alone)."""
    limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        login = await post_json(
            client, "/api/v1/auth/login", {"mobile": ADMIN_MOBILE, "password": ADMIN_PASSWORD}
        )
        admin = {"Authorization": f"Bearer {login['access_token']}"}
        stations = [f"京沪{k:02d}" for k in range(scenario.stops)]
        for k, name in enumerate(stations):
            code = f"Q{chr(65 + k // 26)}{chr(65 + k % 26)}"
            await post_json(client, "/api/v1/admin/stations", {"name": name, "code": code}, admin)
        layout = carriages(scenario.seats)
        capacity = sum(c["rows"] * (4 if c["seat_class"] == "first" else 5) for c in layout)
        codes = [f"G{101 + t}" for t in range(scenario.trains)]
        for t, code in enumerate(codes):
            spec = _train(code, stations, 6 + t, layout)
            await post_json(client, "/api/v1/admin/trains", spec, admin)
        date = (beijing_today() + dt.timedelta(days=scenario.days_ahead)).isoformat()
        await post_json(client, "/api/v1/admin/sales/open", {"date": date}, admin)
        say(f"  {len(codes)} trains of {len(stations)} stops and {capacity:,} seats on sale on {date}")

        riders = [
            r for r, _ in await register_members(client, scenario.members, scenario.passengers_per_member)
        ]
        say(f"  {len(riders):,} members registered with {scenario.passengers_per_member} passengers each")
    classes = sorted({c["seat_class"] for c in layout})
    return Plan(
        [_host_port(node) for node in nodes or [url]],
        date,
        stations,
        codes,
        classes,
        {code: capacity for code in codes},
        list(riders),
    )
