"""A crowd of real HTTP clients booking one hot train-day, and the audit after it — shared by the tests
that run real server processes and break them under the crowd (``tests/integration/test_faults.py``,
``test_pg_restart.py``, ``test_serve_processes.py``, ``tests/cluster/test_cluster_nodes.py``).

The crowd: members written straight to the database with signed tokens (``make_shoppers``), each
ordering one seat at a time, following the order to its end and cancelling half its successes
(``shop``). What every answer must be is checked as it comes (``Tally``): 200/202/409/503 only, a 503
with Retry-After, every error in the API's error shape, no request left unanswered past
``REQUEST_TIMEOUT_S``. A shopper talks to one server, or (``Route``) to several API nodes, moving to
the next one when its node refuses or drops a connection and sending again what went unanswered,
an order under the same Idempotency-Key.

The audit: every 202 order reads back final (``settle_orders``) and stands in the database
(``recorded``); no seat segment held twice, none beyond the day's seats, and the allocator in Redis
agrees with the database (``audit_day``, through ``railbook inventory check``)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
import sys
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from railbook.adapters.db.models import DailySeat, DailyTrain, Member, Order, Passenger, Ticket
from railbook.api.deps import issue_token
from tests.live_server import log_tail
from tests.support import ADMIN_MOBILE, ADMIN_PASSWORD, make_train_day

# The servers' RAILBOOK_JWT_SECRET: the shoppers' tokens are signed with it.
JWT_SECRET = "fault-secret-" + "x" * 32
REQUEST_TIMEOUT_S = 10.0  # a request still unanswered after this is a hang
FINAL = {"SUCCESS", "EMPTY", "FAILURE", "CANCEL"}
EXPECTED_STATUSES = {200, 202, 409, 503}
RESEND_PAUSE_S = 0.1  # before a request that went unanswered is sent to the next node


@dataclass
class Tally:
    """What the crowd saw."""

    accepted: dict[str, dict[str, str]] = field(default_factory=dict)  # order id → member headers
    statuses: Counter[int] = field(default_factory=Counter)
    codes: Counter[str] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)
    refused: int = 0  # connections refused or reset (the server was down)
    refusals: Counter[str] = field(default_factory=Counter)
    slowest_s: float = 0.0
    slowest: str = ""
    cancelled: set[str] = field(default_factory=set)  # orders whose cancel was answered 200
    resent: int = 0  # requests sent again to another node after going unanswered
    accepted_on_resend: set[str] = field(default_factory=set)  # orders answered 202 only when sent again

    def check(self, r: httpx.Response, took: float) -> None:
        self.statuses[r.status_code] += 1
        if took > self.slowest_s:
            self.slowest_s = took
            self.slowest = f"{r.request.method} {r.request.url.path} → {r.status_code}"
        if r.status_code >= 400:
            with contextlib.suppress(Exception):
                self.codes[r.json()["error"]["code"]] += 1
        where = f"{r.request.method} {r.request.url.path}"
        if r.status_code not in EXPECTED_STATUSES:
            self.violations.append(f"{where} → {r.status_code}: {r.text[:300]}")
        if r.status_code == 503 and not r.headers.get("retry-after"):
            self.violations.append(f"{where} → 503 without Retry-After: {r.text[:200]}")
        if r.status_code >= 400:
            try:
                error = r.json()["error"]
                assert isinstance(error["code"], str) and "message" in error
            except Exception:
                self.violations.append(f"{where} → {r.status_code} not in the error shape: {r.text[:200]}")


async def call(
    client: httpx.AsyncClient, tally: Tally, method: str, path: str, **kw: Any
) -> httpx.Response | None:
    """One request, checked; None when it went unanswered (refused, reset, or a hang)."""
    started = time.monotonic()
    try:
        r = await client.request(method, path, **kw)
    except httpx.TimeoutException:
        tally.violations.append(f"{method} {path}: no answer within {REQUEST_TIMEOUT_S}s (a hang)")
        return None
    except httpx.TransportError as exc:
        tally.refused += 1
        tally.refusals[type(exc).__name__] += 1
        return None
    tally.check(r, time.monotonic() - started)
    return r


def crowd_client(base_url: str, connections: int) -> httpx.AsyncClient:
    """A client for a crowd of ``connections`` shoppers on one server. Idle connections are dropped
    before the server's keep-alive timeout (5 s) can race a request."""
    limits = httpx.Limits(
        max_connections=connections, max_keepalive_connections=connections, keepalive_expiry=2.0
    )
    return httpx.AsyncClient(base_url=base_url, timeout=REQUEST_TIMEOUT_S, limits=limits)


@dataclass
class Route:
    """The servers a shopper talks to: it stays on one (``at``, an index into ``clients``) until that
    one refuses or drops a connection, then moves to the next. With ``resend`` what went unanswered
    is sent again there at once (an order under its Idempotency-Key), as a client behind a load
    balancer retries; without, it is left unanswered (a single server that is restarted)."""

    clients: Sequence[httpx.AsyncClient]
    at: int = 0
    resend: bool = False

    @property
    def client(self) -> httpx.AsyncClient:
        return self.clients[self.at % len(self.clients)]

    async def send(
        self, tally: Tally, stop: asyncio.Event, method: str, path: str, **kw: Any
    ) -> tuple[httpx.Response | None, int]:
        """The answer (None if none came) and how many times the request was sent."""
        sent = 0
        while True:
            sent += 1
            r = await call(self.client, tally, method, path, **kw)
            if r is not None:
                return r, sent
            self.at += 1
            if not self.resend or stop.is_set():
                return None, sent
            tally.resent += 1
            await asyncio.sleep(RESEND_PAUSE_S)


def server_env(database_url: str, redis_url: str, **extra: str) -> dict[str, str]:
    """The RAILBOOK_ settings of a server process under the crowd: the known admin and JWT secret,
    cheap password hashing, no rate limits, no sample data, a short sale window; ``extra`` on top."""
    return {
        "RAILBOOK_DATABASE_URL": database_url,
        "RAILBOOK_REDIS_URL": redis_url,
        "RAILBOOK_RATE_LIMITS": "off",
        "RAILBOOK_SALE_DAYS_AHEAD": "3",
        "RAILBOOK_LOAD_SAMPLE_DATA": "false",
        "RAILBOOK_ADMIN_MOBILE": ADMIN_MOBILE,
        "RAILBOOK_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "RAILBOOK_JWT_SECRET": JWT_SECRET,
        "RAILBOOK_ARGON2_TIME_COST": "1",
        "RAILBOOK_ARGON2_MEMORY_COST": "1024",
        "RAILBOOK_PAY_DEADLINE_SECONDS": "600",
        **extra,
    }


@dataclass
class Shopper:
    headers: dict[str, str]
    passengers: list[int]


async def hot_day(
    client: httpx.AsyncClient, pg_url: str, *, rows: int, stops: int, shoppers: int
) -> tuple[dict[str, Any], list[Shopper]]:
    """Through the server of ``client``, as its admin: a new train of ``stops`` stops and ``rows`` rows
    of second class, on sale tomorrow; and ``shoppers`` members to book it."""
    r = await client.post("/api/v1/auth/login", json={"mobile": ADMIN_MOBILE, "password": ADMIN_PASSWORD})
    assert r.status_code == 200, r.text
    admin = {"Authorization": f"Bearer {r.json()['access_token']}"}
    day = await make_train_day(client, admin, rows=rows, stops=stops, days_ahead=1)
    return day, await make_shoppers(pg_url, shoppers)


async def make_shoppers(pg_url: str, n: int, secret: str = JWT_SECRET) -> list[Shopper]:
    """Members with eight passengers each (a passenger holding an unpaid ticket of the day can book
    nothing more on it, and shoppers keep half their successes), written straight to the database
    (registration is not under test), and their access tokens signed with ``secret``."""
    engine = create_async_engine(pg_url)
    out = []
    tag = random.randrange(10**5)
    try:
        async with engine.begin() as conn, AsyncSession(bind=conn) as session:
            members = [
                Member(mobile=f"166{tag:05d}{k:03d}", name="乘客", password_hash="x") for k in range(n)
            ]
            session.add_all(members)
            await session.flush()
            passengers = [
                [
                    # The crowd's own people (the tag as region): trips are checked by ID number.
                    Passenger(member_id=m.id, name="张三", id_card=f"{tag:06d}19900101{k:03d}{j}")
                    for j in range(8)
                ]
                for k, m in enumerate(members)
            ]
            session.add_all([p for ps in passengers for p in ps])
            await session.flush()
            signer: Any = SimpleNamespace(
                settings=SimpleNamespace(access_token_seconds=3600), jwt_secret=secret, verified_tokens={}
            )
            for m, ps in zip(members, passengers, strict=True):
                token, _ = issue_token(signer, m.id, "member")
                out.append(Shopper({"Authorization": f"Bearer {token}"}, [p.id for p in ps]))
    finally:
        await engine.dispose()
    return out


async def shop(
    route: httpx.AsyncClient | Route,
    shopper: Shopper,
    day: dict[str, Any],
    stop: asyncio.Event,
    tally: Tally,
    rng: random.Random,
) -> None:
    """Order one seat at a time; follow the order to its end; cancel half the successes (seats come
    back, so the day keeps selling); back off on 409/503 and on refused connections. On a ``Route``
    that resends, every order carries an Idempotency-Key of its own."""
    if isinstance(route, httpx.AsyncClient):
        route = Route([route])
    names = [s[0] for s in day["stations"]]
    k = 0
    while not stop.is_set():
        pid = shopper.passengers[k % len(shopper.passengers)]
        k += 1
        i = rng.randrange(len(names) - 1)
        j = rng.randrange(i + 1, len(names))
        body = {
            "date": day["date"],
            "train_code": day["train_code"],
            "from": names[i],
            "to": names[j],
            "passengers": [{"passenger_id": pid, "seat_class": "second"}],
        }
        headers = shopper.headers
        if route.resend:
            headers = {**headers, "Idempotency-Key": f"crowd-{uuid.UUID(int=rng.getrandbits(128))}"}
        r, sent = await route.send(tally, stop, "POST", "/api/v1/orders", json=body, headers=headers)
        if r is None or r.status_code != 202:
            await asyncio.sleep(0.3 if r is None or r.status_code == 503 else 0.05)
            continue
        order_id = r.json()["order_id"]
        tally.accepted[order_id] = shopper.headers
        if sent > 1:
            tally.accepted_on_resend.add(order_id)
        while not stop.is_set():
            await asyncio.sleep(0.15)
            r, _ = await route.send(tally, stop, "GET", f"/api/v1/orders/{order_id}", headers=shopper.headers)
            if r is None or r.status_code != 200:
                continue
            status = r.json()["status"]
            if status in FINAL:
                if status == "SUCCESS" and rng.random() < 0.5:
                    c, _ = await route.send(
                        tally, stop, "POST", f"/api/v1/orders/{order_id}/cancel", headers=shopper.headers
                    )
                    if c is not None and c.status_code == 200:
                        tally.cancelled.add(order_id)
                break


async def settle_orders(
    client: httpx.AsyncClient, tally: Tally, *, within_s: float, lost_ok: bool, logs: Sequence[Path]
) -> Counter[str]:
    """Every order the crowd saw accepted reads back final within ``within_s``; FAILURE only as
    LOST_IN_FAILOVER (or the SEAT_CONFLICT backstop) and only where Redis data may have been lost
    (``lost_ok``). How many ended in each state; the tails of ``logs`` when one did not."""
    deadline = time.monotonic() + within_s
    open_ids = dict(tally.accepted)
    finals: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    while open_ids:
        for order_id, headers in list(open_ids.items()):
            r = await call(client, tally, "GET", f"/api/v1/orders/{order_id}", headers=headers)
            if r is None or r.status_code != 200:
                continue
            body = r.json()
            if body["status"] in FINAL:
                finals[body["status"]] += 1
                if body["status"] == "FAILURE":
                    failures[(body.get("error") or {}).get("code", "?")] += 1
                del open_ids[order_id]
        if not open_ids:
            break
        assert time.monotonic() < deadline, (
            f"{len(open_ids)} accepted orders not final after {within_s}s "
            f"(e.g. {list(open_ids)[:3]}):\n" + "\n".join(f"{p}:\n{log_tail(p)}" for p in logs)
        )
        await asyncio.sleep(0.5)
    if lost_ok:
        assert set(failures) <= {"LOST_IN_FAILOVER", "SEAT_CONFLICT"}, failures
    else:
        assert not failures, f"orders failed although no data was lost: {failures}"
    return finals


def assert_clean(tally: Tally, logs: Sequence[Path], *, refused_ok: bool = False) -> None:
    """No answer broke the rules (``Tally.check``), no 500, nothing refused unless a server was down
    (``refused_ok``), and no server logged an unhandled error or a background role that failed."""
    assert not tally.violations, "\n".join(tally.violations[:20])
    assert 500 not in tally.statuses
    if not refused_ok:
        assert tally.refused == 0, f"{tally.refused} requests were refused or reset: {dict(tally.refusals)}"
    for log in logs:
        text = log.read_text(errors="replace")
        assert "unhandled_error" not in text, log_tail(log, 80)
        assert "background_role_failed" not in text, log_tail(log, 80)


def report(name: str, tally: Tally, finals: Counter[str], figures: dict[str, Any]) -> None:
    """One line of what the crowd saw and what the database holds (shown with ``-s``)."""
    t = tally
    print(
        f"\n[{name}] accepted={len(t.accepted)} finals={dict(finals)} statuses={dict(t.statuses)} "
        f"codes={dict(t.codes)} refused={dict(t.refusals)} resent={t.resent} "
        f"accepted_on_resend={len(t.accepted_on_resend)} cancelled={len(t.cancelled)} "
        f"slowest={t.slowest_s:.2f}s ({t.slowest}) db={figures}"
    )


async def run_railbook(env: dict[str, str], *args: str, cwd: Path | None = None) -> tuple[int, str]:
    """Run a ``railbook`` command with these environment variables (without blocking the event loop):
    its exit status and output."""
    railbook = Path(sys.executable).with_name("railbook")
    proc = await asyncio.create_subprocess_exec(
        str(railbook),
        *args,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


async def audit_day(pg_url: str, day: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    """The system of record holds no seat segment twice and, on every segment, no more than the day's
    seats; the allocator (``railbook inventory check`` with ``env``, the servers' settings) agrees
    with it. Returns figures for the report."""
    engine = create_async_engine(pg_url)
    try:
        async with engine.connect() as conn:
            daily_id = (
                await conn.execute(
                    select(DailyTrain.id).where(
                        DailyTrain.train_code == day["train_code"],
                        DailyTrain.service_date == dt.date.fromisoformat(day["date"]),
                    )
                )
            ).scalar_one()
            capacity = (
                await conn.execute(
                    select(func.count()).select_from(DailySeat).where(DailySeat.daily_train_id == daily_id)
                )
            ).scalar_one()
            tickets = (
                await conn.execute(
                    select(Ticket.daily_seat_id, Ticket.from_index, Ticket.to_index, Ticket.order_id).where(
                        Ticket.daily_train_id == daily_id, Ticket.status.in_(["UNPAID", "PAID"])
                    )
                )
            ).all()
            orders = Counter(
                (await conn.execute(select(Order.status).where(Order.daily_train_id == daily_id))).scalars()
            )
    finally:
        await engine.dispose()
    held: dict[tuple[int, int], str] = {}
    for seat, i, j, order_id in tickets:
        for k in range(i, j):
            other = held.setdefault((seat, k), order_id)
            assert other == order_id, f"seat {seat} segment {k} held by {other} and {order_id}"
    sold = Counter(seg for (_, seg) in held)
    for k in range(len(day["stations"]) - 1):
        assert sold[k] <= capacity, f"segment {k}: {sold[k]} seats sold of {capacity}"
    env = dict(env, RAILBOOK_DATABASE_URL=pg_url)
    checks = 0
    while True:  # a cancel's release may still be on its retry loop
        checks += 1
        rc, out = await run_railbook(
            env, "inventory", "check", "--date", day["date"], "--train", day["train_code"]
        )
        if rc == 0 or checks == 10:
            break
        await asyncio.sleep(1.0)
    assert rc == 0, f"allocator and system of record disagree:\n{out}"
    return {"active_tickets": len(tickets), "orders": dict(orders), "inventory_checks": checks}


async def recorded(pg_url: str, tally: Tally) -> dict[str, int]:
    """Every order answered 202 stands in the database, final, and every cancel answered 200 stands
    there as CANCEL: nothing acknowledged to a client was lost."""
    engine = create_async_engine(pg_url)
    try:
        async with engine.connect() as conn:
            rows = (
                await conn.execute(select(Order.id, Order.status).where(Order.id.in_(list(tally.accepted))))
            ).all()
    finally:
        await engine.dispose()
    status: dict[str, str] = {order_id: st for order_id, st in rows}
    missing = [order_id for order_id in tally.accepted if order_id not in status]
    assert not missing, f"{len(missing)} accepted orders are not in the database, e.g. {missing[:3]}"
    open_orders = [(order_id, st) for order_id, st in status.items() if st not in FINAL]
    assert not open_orders, f"accepted orders not final in the database: {open_orders[:3]}"
    uncancelled = [
        (order_id, status[order_id]) for order_id in tally.cancelled if status[order_id] != "CANCEL"
    ]
    assert not uncancelled, f"orders cancelled with 200 but not CANCEL in the database: {uncancelled[:3]}"
    return {"recorded": len(status), "cancels_recorded": len(tally.cancelled)}
