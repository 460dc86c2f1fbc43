"""The 12306 rules of the accept path: sale closes before departure (TRAIN_DEPARTED), one person one
seat at a time (TRIP_CONFLICT, by ID number across members, also under concurrency and after a loss
of the trips' data), and fares by passenger type on tickets (NOT_A_CHILD) — in both modes."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import random
import time
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from railbook.adapters.embedded.queue import MemoryOrderGuard
from railbook.adapters.embedded.trips import MemoryTrips
from railbook.adapters.redis.protection import marker_key
from railbook.adapters.redis.trips import TRIPS_RESTORED_KEY, trip_value, trips_key
from railbook.domain.fees import BEIJING
from railbook.domain.identity import compose_id_card, traveller_key
from railbook.domain.pricing import passenger_fare_fen, yuan_text
from railbook.domain.sale import Trip
from railbook.kit.clock import beijing_today
from railbook.services.booking.trips import RECENT_CLAIM_SECONDS
from tests.conftest import OWNER_KEY
from tests.naming import station_code, train_code
from tests.support import add_passenger, admin, make_train_day, order_body, register, unique, wait_final

_cards = itertools.count(random.randrange(1, 900))


def _code(r: httpx.Response) -> str:
    return str(r.json()["error"]["code"]) if r.status_code >= 400 else ""


async def _passenger(
    client: httpx.AsyncClient, headers: dict[str, str], kind: str, born: dt.date, card: str | None = None
) -> int:
    """A passenger of the member born then (``card``: an ID number another member may list too)."""
    seq = next(_cards) % 999 + 1
    card = card or compose_id_card("110101", born, seq)
    r = await client.post(
        "/api/v1/passengers",
        json={"name": "乘客" + "甲乙丙丁戊己庚辛壬癸"[seq % 10], "id_card": card, "type": kind},
        headers=headers,
    )
    assert r.status_code == 201, r.text
    return int(r.json()["passenger_id"])


async def _order(client: httpx.AsyncClient, headers: dict[str, str], body: dict[str, Any]) -> httpx.Response:
    return await client.post("/api/v1/orders", json=body, headers=headers)


async def _held(client: httpx.AsyncClient, headers: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
    """An order placed and committed (SUCCESS, unpaid)."""
    r = await _order(client, headers, body)
    assert r.status_code == 202, r.text
    final = await wait_final(client, headers, r.json()["order_id"])
    assert final["status"] == "SUCCESS", final
    return final


# -- TRAIN_DEPARTED ---------------------------------------------------------------------------


async def _train_leaving_in(client: httpx.AsyncClient, minutes: int) -> dict[str, Any]:
    """A two-stop train leaving its first stop ``minutes`` from now (Beijing time), on sale."""
    adm = await admin(client)
    departs = (dt.datetime.now(BEIJING) + dt.timedelta(minutes=minutes)).replace(second=0, microsecond=0)
    arrives = departs + dt.timedelta(hours=1)
    stations = []
    for _ in range(2):
        name, code = f"站{unique()}", station_code()
        r = await client.post("/api/v1/admin/stations", json={"name": name, "code": code}, headers=adm)
        assert r.status_code == 201, r.text
        stations.append((name, code))
    late = (arrives.date() - departs.date()).days
    spec = {
        "code": train_code("G"),
        "kind": "G",
        "stops": [
            {"station": stations[0][0], "departs": f"{departs:%H:%M}", "km": 0},
            {
                "station": stations[1][0],
                "arrives": f"{arrives:%H:%M}",
                "km": 200,
                **({"day": late} if late else {}),
            },
        ],
        "carriages": [{"carriage": 1, "seat_class": "second", "rows": 4}],
    }
    r = await client.post("/api/v1/admin/trains", json=spec, headers=adm)
    assert r.status_code == 201, r.text
    date = departs.date().isoformat()
    r = await client.post("/api/v1/admin/sales/open", json={"date": date}, headers=adm)
    assert r.status_code == 200, r.text
    return {"train_code": spec["code"], "date": date, "stations": stations}


async def test_sale_closes_within_the_cutoff(client: httpx.AsyncClient) -> None:
    soon = await _train_leaving_in(client, 3)
    later = await _train_leaving_in(client, 30)
    m = await register(client)
    p = await add_passenger(client, m["headers"])
    r = await _order(client, m["headers"], order_body(soon, [p]))
    assert r.status_code == 409 and _code(r) == "TRAIN_DEPARTED", r.text
    w = await client.post("/api/v1/waitlist", json=order_body(soon, [p]), headers=m["headers"])
    assert w.status_code == 409 and _code(w) == "TRAIN_DEPARTED", w.text
    r = await _order(client, m["headers"], order_body(later, [p]))
    assert r.status_code == 202, r.text


# -- TRIP_CONFLICT ----------------------------------------------------------------------------


def _records_not_asked(client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any read of a clashing order from the system of record fail the test."""
    orders = client.app.state.container.orders  # type: ignore[attr-defined]

    async def asked(*args: Any) -> Any:
        raise AssertionError(f"the system of record was asked about a clash: {args}")

    monkeypatch.setattr(orders, "trip_state", asked)


async def test_same_train_day_twice(client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """A trip claimed moments ago is live: no record is read to refuse. On its train-day the duplicate
    markers tell an unpaid order (DUPLICATE_ORDER) from a paid one."""
    day = await make_train_day(client, await admin(client))
    m = await register(client)
    p = await add_passenger(client, m["headers"])
    first = await _held(client, m["headers"], order_body(day, [p], 0, 1))
    _records_not_asked(client, monkeypatch)
    # Unpaid: the same member's duplicate wins, as before.
    r = await _order(client, m["headers"], order_body(day, [p], 2, 3))
    assert r.status_code == 409 and _code(r) == "DUPLICATE_ORDER", r.text
    paid = await client.post(
        f"/api/v1/orders/{first['order_id']}/pay", json={"method": "mock"}, headers=m["headers"]
    )
    assert paid.status_code == 200, paid.text
    # Paid: a seat held on this train-day, even for a later, disjoint journey.
    r = await _order(client, m["headers"], order_body(day, [p], 2, 3))
    assert r.status_code == 409 and _code(r) == "TRIP_CONFLICT", r.text


async def test_overlapping_trains_conflict_and_disjoint_ones_do_not(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    adm = await admin(client)
    morning = await make_train_day(client, adm, start_hour=8)  # 08:05 → 11:00
    overlapping = await make_train_day(client, adm, start_hour=10)  # 10:05 → 13:00
    afternoon = await make_train_day(client, adm, start_hour=14)  # 14:05 → 17:00
    m = await register(client)
    p, q = await add_passenger(client, m["headers"]), await add_passenger(client, m["headers"], "王五")
    await _held(client, m["headers"], order_body(morning, [p]))
    _records_not_asked(client, monkeypatch)  # a trip claimed moments ago refuses by itself
    r = await _order(client, m["headers"], order_body(overlapping, [q, p]))
    assert r.status_code == 409 and _code(r) == "TRIP_CONFLICT", r.text
    assert r.json()["error"]["details"]["passenger_id"] == p
    # q was not left holding the refused order's trip.
    r = await _order(client, m["headers"], order_body(overlapping, [q]))
    assert r.status_code == 202, r.text
    r = await _order(client, m["headers"], order_body(afternoon, [p]))
    assert r.status_code == 202, r.text


async def test_cancelled_order_frees_the_time(client: httpx.AsyncClient) -> None:
    adm = await admin(client)
    first = await make_train_day(client, adm, start_hour=8)
    second = await make_train_day(client, adm, start_hour=9)
    m = await register(client)
    p = await add_passenger(client, m["headers"])
    held = await _held(client, m["headers"], order_body(first, [p]))
    r = await _order(client, m["headers"], order_body(second, [p]))
    assert r.status_code == 409 and _code(r) == "TRIP_CONFLICT", r.text
    c = await client.post(f"/api/v1/orders/{held['order_id']}/cancel", headers=m["headers"])
    assert c.status_code == 200, c.text
    r = await _order(client, m["headers"], order_body(second, [p]))
    assert r.status_code == 202, r.text


async def test_sold_out_order_frees_the_time(client: httpx.AsyncClient) -> None:
    adm = await admin(client)
    full = await make_train_day(client, adm, rows=1, start_hour=8)
    other = await make_train_day(client, adm, start_hour=9)
    crowd = await register(client)
    riders = [await add_passenger(client, crowd["headers"]) for _ in range(5)]
    await _held(client, crowd["headers"], order_body(full, riders))
    m = await register(client)
    p = await add_passenger(client, m["headers"])
    r = await _order(client, m["headers"], order_body(full, [p]))
    assert r.status_code == 409 and _code(r) == "SOLD_OUT", r.text
    r = await _order(client, m["headers"], order_body(other, [p]))
    assert r.status_code == 202, r.text


async def test_simultaneous_orders_for_one_passenger(client: httpx.AsyncClient) -> None:
    adm = await admin(client)
    day = await make_train_day(client, adm, rows=6)
    trains = [await make_train_day(client, adm) for _ in range(4)]  # same times: all overlap
    m = await register(client)
    p = await add_passenger(client, m["headers"])
    same_day = await asyncio.gather(*[_order(client, m["headers"], order_body(day, [p])) for _ in range(10)])
    assert sorted(r.status_code for r in same_day) == [202] + [409] * 9, [r.text for r in same_day]
    assert {_code(r) for r in same_day if r.status_code == 409} <= {"DUPLICATE_ORDER", "TRIP_CONFLICT"}
    q = await add_passenger(client, m["headers"], "赵六")
    bodies = [order_body(t, [q]) for t in trains for _ in range(3)]
    across = await asyncio.gather(*[_order(client, m["headers"], b) for b in bodies])
    assert sorted(r.status_code for r in across) == [202] + [409] * (len(bodies) - 1), [
        r.text for r in across
    ]
    assert {_code(r) for r in across if r.status_code == 409} <= {"DUPLICATE_ORDER", "TRIP_CONFLICT"}
    assert any(_code(r) == "TRIP_CONFLICT" for r in across)


async def _traveller(client: httpx.AsyncClient, passenger_id: int) -> str:
    """The traveller key of a passenger (the person, by ID number) under the app's secret."""
    container = client.app.state.container  # type: ignore[attr-defined]
    cards = await container.orders.passenger_cards([passenger_id])
    return traveller_key(container.jwt_secret, cards[passenger_id])


async def _trip(client: httpx.AsyncClient, redis_url: str, passenger_id: int, order_id: str) -> str | None:
    """A passenger's trip as the guard holds it ("member train-day starts ends claimed-at passenger"),
    or None."""
    container = client.app.state.container  # type: ignore[attr-defined]
    key = await _traveller(client, passenger_id)
    if isinstance(container.trips, MemoryTrips):
        held = container.trips.held.get(key, {}).get(order_id)
        if held is None:
            return None
        member, trip, at, holder = held
        return trip_value(member, trip, at, holder)
    r = aioredis.Redis.from_url(redis_url)
    try:
        value = await r.hget(trips_key(key), order_id)
    finally:
        await r.aclose()
    return None if value is None else value.decode()


async def _put_trip(
    client: httpx.AsyncClient, redis_url: str, passenger_id: int, order_id: str, value: str, claimed_at: int
) -> None:
    """Set a passenger's trip as ``_trip`` read it, claimed at ``claimed_at`` (as a missed release
    would leave it, or as time would age it)."""
    member, train_day, starts, ends, _, holder = value.split(" ")
    trip = Trip(train_day, int(starts), int(ends))
    container = client.app.state.container  # type: ignore[attr-defined]
    key = await _traveller(client, passenger_id)
    if isinstance(container.trips, MemoryTrips):
        container.trips.held.setdefault(key, {})[order_id] = (int(member), trip, claimed_at, int(holder))
        return
    r = aioredis.Redis.from_url(redis_url)
    try:
        await r.hset(trips_key(key), order_id, trip_value(int(member), trip, claimed_at, int(holder)))
    finally:
        await r.aclose()


@dataclass
class _HeldTrip:
    """Two overlapping train-days, a member whose passenger holds an unpaid ticket on the first, and
    that passenger's trip as the guard holds it."""

    admin: dict[str, str]
    first: dict[str, Any]
    second: dict[str, Any]
    member: dict[str, Any]
    p: int
    order_id: str
    value: str


async def _a_held_trip(client: httpx.AsyncClient, redis_url: str) -> _HeldTrip:
    adm = await admin(client)
    first, second = await make_train_day(client, adm), await make_train_day(client, adm)
    m = await register(client)
    p = await add_passenger(client, m["headers"])
    held = await _held(client, m["headers"], order_body(first, [p]))
    value = await _trip(client, redis_url, p, held["order_id"])
    assert value is not None
    return _HeldTrip(adm, first, second, m, p, held["order_id"], value)


async def test_an_older_clash_is_judged_by_the_records(client: httpx.AsyncClient, redis_url: str) -> None:
    """A trip claimed over a minute ago may be one a missed release left: the system of record tells,
    and a live one still refuses (TRIP_CONFLICT, or DUPLICATE_ORDER for an unpaid one on this train-day
    when its marker is gone)."""
    t = await _a_held_trip(client, redis_url)
    await _put_trip(client, redis_url, t.p, t.order_id, t.value, int(time.time()) - RECENT_CLAIM_SECONDS - 5)
    r = await _order(client, t.member["headers"], order_body(t.second, [t.p]))
    assert r.status_code == 409 and _code(r) == "TRIP_CONFLICT", r.text
    await _drop_markers(client, redis_url, t.first, t.member["member_id"], t.p)
    r = await _order(client, t.member["headers"], order_body(t.first, [t.p], 2, 3))
    assert r.status_code == 409 and _code(r) == "DUPLICATE_ORDER", r.text
    assert await _trip(client, redis_url, t.p, t.order_id) is not None


async def test_a_trip_left_by_a_missed_release_heals(client: httpx.AsyncClient, redis_url: str) -> None:
    """The trip of a cancelled order put back (its release missed): it refuses for the rest of its
    first minute at most, then the records show it stale, it is dropped and one order goes through."""
    t = await _a_held_trip(client, redis_url)
    c = await client.post(f"/api/v1/orders/{t.order_id}/cancel", headers=t.member["headers"])
    assert c.status_code == 200, c.text
    assert await _trip(client, redis_url, t.p, t.order_id) is None
    await _put_trip(client, redis_url, t.p, t.order_id, t.value, int(time.time()) - 5)
    r = await _order(client, t.member["headers"], order_body(t.second, [t.p]))
    assert r.status_code == 409 and _code(r) == "TRIP_CONFLICT", r.text
    await _put_trip(client, redis_url, t.p, t.order_id, t.value, int(time.time()) - RECENT_CLAIM_SECONDS - 5)
    # Healed by whichever order meets it first; of those racing, one is accepted.
    third = await make_train_day(client, t.admin)
    bodies = [order_body(day, [t.p]) for day in (t.second, third) for _ in range(3)]
    racing = await asyncio.gather(*[_order(client, t.member["headers"], b) for b in bodies])
    assert sorted(r.status_code for r in racing) == [202] + [409] * 5, [r.text for r in racing]
    assert {_code(r) for r in racing if r.status_code == 409} <= {"DUPLICATE_ORDER", "TRIP_CONFLICT"}
    assert await _trip(client, redis_url, t.p, t.order_id) is None


async def _drop_markers(
    client: httpx.AsyncClient, redis_url: str, day: dict[str, Any], member_id: int, passenger_id: int
) -> None:
    """Delete a passenger's duplicate marker on a train-day (as its expiry would), the day still trusted."""
    date = dt.date.fromisoformat(day["date"])
    guard = client.app.state.container.guard  # type: ignore[attr-defined]
    if isinstance(guard, MemoryOrderGuard):
        assert guard.markers.pop(f"{day['train_code']}:{date}:{member_id}:{passenger_id}", None) is not None
        return
    r = aioredis.Redis.from_url(redis_url)
    try:
        assert await r.delete(marker_key(day["train_code"], date, member_id, passenger_id)) == 1
    finally:
        await r.aclose()


def _restarted_embedded(client: httpx.AsyncClient) -> bool:
    """In the embedded mode, empty the trips as a restart leaves them (not trusted) and say so."""
    trips = client.app.state.container.trips  # type: ignore[attr-defined]
    if not isinstance(trips, MemoryTrips):
        return False
    trips.held.clear()
    trips.trusted = False
    return True


async def _wipe_trips(client: httpx.AsyncClient, redis_url: str, passenger_id: int) -> None:
    key = await _traveller(client, passenger_id)
    if _restarted_embedded(client):
        return
    r = aioredis.Redis.from_url(redis_url)
    try:
        assert await r.delete(trips_key(key), TRIPS_RESTORED_KEY) == 2
    finally:
        await r.aclose()


async def test_trips_are_restored_after_a_loss_of_their_data(
    client: httpx.AsyncClient, redis_url: str
) -> None:
    adm = await admin(client)
    first = await make_train_day(client, adm, start_hour=8)
    second = await make_train_day(client, adm, start_hour=9)
    m = await register(client)
    p = await add_passenger(client, m["headers"])
    await _held(client, m["headers"], order_body(first, [p]))
    await _wipe_trips(client, redis_url, p)
    r = await _order(client, m["headers"], order_body(second, [p]))
    assert r.status_code == 409 and _code(r) == "TRIP_CONFLICT", r.text


# -- One person listed by two members -----------------------------------------------------------

_shared_cards = itertools.count()


@dataclass
class _SharedPerson:
    """Two members who both list one person (the same ID number): A as ``pa``, B as ``pb``."""

    a: dict[str, Any]
    b: dict[str, Any]
    pa: int
    pb: int


async def _one_person_two_members(client: httpx.AsyncClient) -> _SharedPerson:
    n = next(_shared_cards)
    card = compose_id_card("110103", dt.date(1970, 1, 1) + dt.timedelta(days=n // 1000), n % 1000)
    a, b = await register(client), await register(client)
    pa = await _passenger(client, a["headers"], "adult", dt.date(1970, 1, 1), card)
    pb = await _passenger(client, b["headers"], "adult", dt.date(1970, 1, 1), card.lower())
    assert pa != pb
    return _SharedPerson(a, b, pa, pb)


def _conflict_naming(r: httpx.Response, passenger_id: int) -> None:
    assert r.status_code == 409 and _code(r) == "TRIP_CONFLICT", r.text
    assert r.json()["error"]["details"]["passenger_id"] == passenger_id, r.text


async def _pay(client: httpx.AsyncClient, headers: dict[str, str], order_id: str) -> None:
    r = await client.post(f"/api/v1/orders/{order_id}/pay", json={"method": "mock"}, headers=headers)
    assert r.status_code == 200, r.text


async def test_one_person_listed_by_two_members_holds_one_seat_at_a_time(client: httpx.AsyncClient) -> None:
    """12306 decides by ID number: B cannot book onto A's train-day, nor an overlapping train, the
    person A has booked and paid for; the refusal names B's passenger. A later train is B's to book."""
    adm = await admin(client)
    day = await make_train_day(client, adm, start_hour=8)  # 08:05 → 11:00
    overlapping = await make_train_day(client, adm, start_hour=10)  # 10:05 → 13:00
    later = await make_train_day(client, adm, start_hour=14)  # 14:05 → 17:00
    s = await _one_person_two_members(client)
    held = await _held(client, s.a["headers"], order_body(day, [s.pa]))
    await _pay(client, s.a["headers"], held["order_id"])
    _conflict_naming(await _order(client, s.b["headers"], order_body(day, [s.pb], 2, 3)), s.pb)
    _conflict_naming(await _order(client, s.b["headers"], order_body(overlapping, [s.pb])), s.pb)
    # With someone else beside them: refused whole, the other passenger left holding nothing.
    q = await add_passenger(client, s.b["headers"], "王五")
    _conflict_naming(await _order(client, s.b["headers"], order_body(overlapping, [q, s.pb])), s.pb)
    r = await _order(client, s.b["headers"], order_body(overlapping, [q]))
    assert r.status_code == 202, r.text
    r = await _order(client, s.b["headers"], order_body(later, [s.pb]))
    assert r.status_code == 202, r.text
    # And the other way round: B's order now holds the person on the later train, so A is refused there.
    _conflict_naming(await _order(client, s.a["headers"], order_body(later, [s.pa], 1, 2)), s.pa)


async def test_one_member_s_cancelled_order_frees_the_person_for_another(client: httpx.AsyncClient) -> None:
    adm = await admin(client)
    first = await make_train_day(client, adm, start_hour=8)
    second = await make_train_day(client, adm, start_hour=9)
    s = await _one_person_two_members(client)
    held = await _held(client, s.a["headers"], order_body(first, [s.pa]))
    _conflict_naming(await _order(client, s.b["headers"], order_body(second, [s.pb])), s.pb)
    c = await client.post(f"/api/v1/orders/{held['order_id']}/cancel", headers=s.a["headers"])
    assert c.status_code == 200, c.text
    r = await _order(client, s.b["headers"], order_body(second, [s.pb]))
    assert r.status_code == 202, r.text


async def _lose_redis_data(client: httpx.AsyncClient, redis_url: str) -> None:
    """A loss of the guard's data: the test run's Redis database flushed (its owner key kept, so no
    other run takes the database meanwhile); in the embedded mode, a restart's empty trips."""
    if _restarted_embedded(client):
        return
    r = aioredis.Redis.from_url(redis_url)
    try:
        owner, ttl = await r.get(OWNER_KEY), await r.ttl(OWNER_KEY)
        async with r.pipeline(transaction=True) as pipe:
            pipe.flushdb()
            if owner is not None:
                pipe.set(OWNER_KEY, owner, ex=max(ttl, 3600))
            await pipe.execute()
    finally:
        await r.aclose()


async def test_another_member_is_refused_after_a_loss_of_redis_data(
    client: httpx.AsyncClient, redis_url: str
) -> None:
    """The trips restored from the system of record are the person's, whichever member's record holds
    the ticket: B is still refused, on the train-day and on an overlapping train."""
    adm = await admin(client)
    day = await make_train_day(client, adm, start_hour=8)
    overlapping = await make_train_day(client, adm, start_hour=9)
    s = await _one_person_two_members(client)
    held = await _held(client, s.a["headers"], order_body(day, [s.pa]))
    await _pay(client, s.a["headers"], held["order_id"])
    await _lose_redis_data(client, redis_url)
    _conflict_naming(await _order(client, s.b["headers"], order_body(overlapping, [s.pb])), s.pb)
    _conflict_naming(await _order(client, s.b["headers"], order_body(day, [s.pb], 2, 3)), s.pb)


async def test_simultaneous_orders_for_one_person_by_two_members(client: httpx.AsyncClient) -> None:
    adm = await admin(client)
    trains = [await make_train_day(client, adm) for _ in range(3)]  # same times: all overlap
    s = await _one_person_two_members(client)
    orders = [(m, p) for m, p in ((s.a, s.pa), (s.b, s.pb)) for _ in range(2)]
    racing = await asyncio.gather(
        *[_order(client, m["headers"], order_body(t, [p])) for t in trains for m, p in orders]
    )
    codes = sorted(r.status_code for r in racing)
    assert codes == [202] + [409] * (len(racing) - 1), [r.text for r in racing]
    assert {_code(r) for r in racing if r.status_code == 409} <= {"DUPLICATE_ORDER", "TRIP_CONFLICT"}
    assert any(_code(r) == "TRIP_CONFLICT" for r in racing)


# -- Fares by passenger type --------------------------------------------------------------------


async def test_each_ticket_carries_its_fare_type_and_price(client: httpx.AsyncClient) -> None:
    day = await make_train_day(client, await admin(client))
    m = await register(client)
    today = beijing_today()
    kinds = {
        "adult": dt.date(1985, 3, 4),
        "child": today.replace(year=today.year - 8),
        "student": dt.date(2005, 6, 7),
        "disabled_military": dt.date(1970, 1, 2),
    }
    ids = {kind: await _passenger(client, m["headers"], kind, born) for kind, born in kinds.items()}
    search = await client.get(
        "/api/v1/trains/search",
        params={"from": day["stations"][0][0], "to": day["stations"][-1][0], "date": day["date"]},
    )
    assert search.status_code == 200, search.text
    adult_yuan = next(t for t in search.json() if t["train_code"] == day["train_code"])["seats"]["second"][
        "price"
    ]
    adult_fen = round(float(adult_yuan) * 100)
    final = await _held(client, m["headers"], order_body(day, list(ids.values())))
    want = {ids[k]: (k, passenger_fare_fen(adult_fen, k, "second")) for k in kinds}
    got = {t["passenger_id"]: (t["fare_type"], round(float(t["price"]) * 100)) for t in final["tickets"]}
    assert got == want
    assert final["total"] == yuan_text(sum(fen for _, fen in want.values()))
    assert got[ids["child"]][1] < adult_fen and got[ids["student"]][1] < adult_fen
    listed = await client.get("/api/v1/orders", headers=m["headers"])
    mine = next(o for o in listed.json()["items"] if o["order_id"] == final["order_id"])
    assert {t["passenger_id"]: t["fare_type"] for t in mine["tickets"]} == {ids[k]: k for k in kinds}
    tickets = await client.get("/api/v1/tickets", headers=m["headers"])
    assert {t["passenger_id"]: t["fare_type"] for t in tickets.json()} == {ids[k]: k for k in kinds}
    paid = await client.post(
        f"/api/v1/orders/{final['order_id']}/pay", json={"method": "mock"}, headers=m["headers"]
    )
    assert paid.status_code == 200, paid.text
    assert paid.json()["payment_status"] == "PAID" and paid.json()["total"] == final["total"]


async def test_a_child_fare_needs_a_child(client: httpx.AsyncClient) -> None:
    day = await make_train_day(client, await admin(client))
    m = await register(client)
    grown = await _passenger(client, m["headers"], "child", dt.date(1990, 5, 6))
    r = await _order(client, m["headers"], order_body(day, [grown]))
    assert r.status_code == 422 and _code(r) == "NOT_A_CHILD", r.text
    # Nothing is left held: the passenger's time is free.
    adult = await add_passenger(client, m["headers"])
    r = await _order(client, m["headers"], order_body(day, [adult]))
    assert r.status_code == 202, r.text
