"""The accept path's reads of the system of record: the member's passengers (as riders: name, fare
type, birth date) with their unpaid tickets on the train-day (one statement, on PostgreSQL a prepared
one on a lean asyncpg pool), and the train-day's stops, times and prices."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, func, literal_column, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from railbook.adapters.db.models import (
    DailyPairInventory,
    DailyTrain,
    DailyTrainStop,
    Order,
    Passenger,
    Station,
    Ticket,
    Train,
)
from railbook.domain.fees import departure_at
from railbook.domain.order_state import TicketStatus
from railbook.domain.riders import Rider
from railbook.domain.timetable import departure_day
from railbook.services.booking.ports import TrainDay
from railbook.services.ports import KeptKey


async def _load_train_day(session: AsyncSession, train_code: str, date: dt.date) -> TrainDay | None:
    daily = (
        await session.execute(
            select(DailyTrain.id).where(DailyTrain.train_code == train_code, DailyTrain.service_date == date)
        )
    ).scalar_one_or_none()
    if daily is None:
        return None
    stops = (
        await session.execute(
            select(
                DailyTrainStop.stop_index,
                DailyTrainStop.station_name,
                Station.code,
                DailyTrainStop.departs,
                DailyTrainStop.arrives,
                DailyTrainStop.day,
            )
            .join(Station, Station.id == DailyTrainStop.station_id)
            .where(DailyTrainStop.daily_train_id == daily)
            .order_by(DailyTrainStop.stop_index)
        )
    ).all()
    prices = (
        await session.execute(
            select(
                DailyPairInventory.seat_class,
                DailyPairInventory.from_index,
                DailyPairInventory.to_index,
                DailyPairInventory.price_fen,
            ).where(DailyPairInventory.daily_train_id == daily)
        )
    ).all()
    index_of: dict[str, int] = {}
    for idx, name, code, *_ in stops:
        index_of[name] = idx
        index_of[code] = idx
    return TrainDay(
        daily_train_id=daily,
        train_code=train_code,
        date=date,
        station_names=tuple(s.station_name for s in stops),
        index_of=index_of,
        prices={(c, i, j): p for c, i, j, p in prices},
        classes=frozenset(c for c, _, _, _ in prices),
        departure_days=tuple(
            s.day if s.departs is None else departure_day(s.departs, s.arrives, s.day) for s in stops
        ),
        departs_at=tuple(
            departure_at(date, s.departs, departure_day(s.departs, s.arrives, s.day or 0))
            if s.departs
            else None
            for s in stops
        ),
        arrives_at=tuple(departure_at(date, s.arrives, s.day or 0) if s.arrives else None for s in stops),
    )


_passenger = Passenger.__table__
_ticket = Ticket.__table__
_order = Order.__table__


def _passenger_query(with_key: bool) -> Any:
    """One statement for the accept path: the member's passengers among the ids, whether each holds
    an unpaid ticket on the train-day, and (with an idempotency key) the order already made with it."""
    unpaid = (
        select(_ticket.c.id)
        .where(
            _ticket.c.member_id == bindparam("member_id"),
            _ticket.c.daily_train_id == bindparam("daily_train_id"),
            _ticket.c.passenger_id == _passenger.c.id,
            _ticket.c.status == TicketStatus.UNPAID.value,
        )
        .exists()
    )
    columns: list[Any] = [
        _passenger.c.id,
        _passenger.c.name,
        unpaid.label("busy"),
        _passenger.c.type,
        _passenger.c.id_card,
    ]
    if with_key:
        known = (
            select(_order.c.id + literal_column("' '") + func.coalesce(_order.c.request_hash, ""))
            .where(_order.c.member_id == bindparam("member_id"), _order.c.idempotency_key == bindparam("key"))
            .limit(1)
            .scalar_subquery()
        )
        columns.append(known.label("known"))
    return select(*columns).where(
        _passenger.c.member_id == bindparam("member_id"),
        _passenger.c.id.in_(bindparam("ids", expanding=True)),
    )


_QUERIES: dict[bool, Any] = {}


_KEPT_KEYS = select(_order.c.idempotency_key, _order.c.id, _order.c.request_hash, _order.c.created_at).where(
    _order.c.member_id == bindparam("member_id"),
    _order.c.idempotency_key.is_not(None),
    _order.c.created_at >= bindparam("since"),
)


async def kept_keys(bind: AsyncEngine, member_id: int, since: dt.datetime) -> list[KeptKey]:
    """The member's orders' Idempotency-Keys made since ``since``: one statement over the
    (member, key) unique index, no transaction."""
    async with bind.connect() as conn:
        rows = (await conn.execute(_KEPT_KEYS, {"member_id": member_id, "since": since})).all()
    return [KeptKey(str(key), str(oid), str(digest or ""), made) for key, oid, digest, made in rows]


# The accept path's read on PostgreSQL, as one prepared statement on a plain asyncpg pool (no ORM
# compile, no transaction, no pre-ping). $1 member, $2 train-day, $3 passenger ids, $4 the key.
_ACCEPT_SQL = (
    "SELECT p.id, p.name, EXISTS (SELECT 1 FROM ticket t WHERE t.member_id = $1 AND t.daily_train_id = $2"
    " AND t.passenger_id = p.id AND t.status = '" + TicketStatus.UNPAID.value + "') AS busy,"
    " p.type, p.id_card{known}"
    " FROM passenger p WHERE p.member_id = $1 AND p.id = ANY($3::bigint[])"
)
_ACCEPT_SQL_PLAIN = _ACCEPT_SQL.format(known="")
_ACCEPT_SQL_KEYED = _ACCEPT_SQL.format(
    known=", (SELECT o.id || ' ' || coalesce(o.request_hash, '') FROM \"order\" o"
    " WHERE o.member_id = $1 AND o.idempotency_key = $4 LIMIT 1) AS known"
)


async def _keep(_conn: Any) -> None:
    """No reset on release (asyncpg's default costs a round trip): these connections only ever run
    single read statements outside any transaction, so they carry no session state to clear."""


def _connection_lost(conn: Any, exc: Exception) -> Exception | None:
    """What to raise instead of ``exc``, met on ``conn`` (None: ``exc`` itself). A connection the
    server closed under a statement (a restart, a terminated backend) can leave asyncpg's protocol out
    of step, and the statement then fails with an ``InternalClientError`` ("cannot switch to state
    ..."), which says nothing of the lost connection: told by the closed connection, it is raised as
    the ``ConnectionDoesNotExistError`` it is (a store outage: 503 with Retry-After, not a 500). An
    open connection out of step is closed, so the pool never hands it out again."""
    import asyncpg

    if not isinstance(exc, asyncpg.InternalClientError):
        return None
    if conn.is_closed():
        lost: Exception = asyncpg.ConnectionDoesNotExistError(f"the server closed the connection: {exc}")
        return lost
    conn.terminate()
    return None


class _AcceptPool:
    """A small asyncpg pool for the accept path's single read on PostgreSQL. A connection found dead raises a
    disconnect error (answered 503 with Retry-After); the pool drops it and the next request
    reconnects by itself. The pool is created on first use, once, even under a crowd."""

    def __init__(self, url: str, max_size: int) -> None:
        self.dsn = url.replace("postgresql+asyncpg://", "postgresql://", 1)
        self.max_size = max_size
        self.pool: Any = None
        self._creating: asyncio.Lock = asyncio.Lock()

    async def _pool(self) -> Any:
        if self.pool is None:
            async with self._creating:
                if self.pool is None:
                    import asyncpg

                    self.pool = await asyncpg.create_pool(
                        self.dsn,
                        min_size=1,
                        max_size=self.max_size,
                        timeout=5,
                        command_timeout=30,
                        reset=_keep,
                    )
        return self.pool

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        pool = await self._pool()
        async with pool.acquire(timeout=5) as conn:
            try:
                return list(await conn.fetch(sql, *args))
            except Exception as exc:
                lost = _connection_lost(conn, exc)
                if lost is None:
                    raise
                raise lost from exc

    async def aclose(self) -> None:
        if self.pool is not None:
            await self.pool.close()


class DbAcceptReads:
    """The ``AcceptReads`` of the system of record: SQLAlchemy Core on SQLite, the asyncpg pool on
    PostgreSQL for the passengers' read."""

    def __init__(
        self,
        url: str,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        sqlite: bool,
        traveller_secret: str,
        pool_size: int = 20,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.traveller_secret = traveller_secret  # the riders' traveller keys are made under it
        self.pool = None if sqlite else _AcceptPool(url, pool_size)

    async def passengers(
        self, member_id: int, daily_train_id: int, ids: Sequence[int], key: str | None
    ) -> tuple[list[tuple[int, str, bool]], str | None]:
        """The one database read of the accept path (no transaction: a single statement)."""
        if self.pool is None:
            stmt = _QUERIES.get(key is not None)
            if stmt is None:
                stmt = _QUERIES[key is not None] = _passenger_query(key is not None)
            params: dict[str, Any] = {
                "member_id": member_id,
                "daily_train_id": daily_train_id,
                "ids": list(ids),
            }
            if key is not None:
                params["key"] = key
            async with self.sessionmaker.kw["bind"].connect() as conn:
                rows: Sequence[Any] = (await conn.execute(stmt, params)).all()
        elif key is None:
            rows = await self.pool.fetch(_ACCEPT_SQL_PLAIN, member_id, daily_train_id, list(ids))
        else:
            rows = await self.pool.fetch(_ACCEPT_SQL_KEYED, member_id, daily_train_id, list(ids), key)
        known = next((r[5] for r in rows if r[5]), None) if key is not None else None
        secret = self.traveller_secret
        riders = [
            (int(r[0]), Rider.of(str(r[1]), str(r[3]), str(r[4]), secret).text(), bool(r[2])) for r in rows
        ]
        return riders, known

    async def kept_keys(self, member_id: int, since: dt.datetime) -> list[KeptKey]:
        return await kept_keys(self.sessionmaker.kw["bind"], member_id, since)

    async def train_day(self, train_code: str, date: dt.date) -> TrainDay | None:
        async with self.sessionmaker() as session:
            return await _load_train_day(session, train_code, date)

    async def train_exists(self, train_code: str) -> bool:
        async with self.sessionmaker() as session:
            known = (
                await session.execute(select(Train.id).where(Train.code == train_code))
            ).scalar_one_or_none()
        return known is not None

    async def open_dates(self, train_code: str, dates: Sequence[dt.date]) -> list[dt.date]:
        async with self.sessionmaker() as session:
            found = (
                await session.execute(
                    select(DailyTrain.service_date).where(
                        DailyTrain.train_code == train_code, DailyTrain.service_date.in_(list(dates))
                    )
                )
            ).scalars()
            return sorted(found, reverse=True)

    async def aclose(self) -> None:
        if self.pool is not None:
            await self.pool.aclose()
