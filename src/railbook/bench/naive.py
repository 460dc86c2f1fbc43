"""The naive design the flash-sale bench compares railbook with: FastAPI + asyncpg, nothing else.

It speaks the part of the API contract the bench uses (register, login, passengers, the admin set-up,
search, orders, pay, cancel, refund) over the same schema ideas (one row per seat of a train-day,
its sold segments as a 64-bit mask), and books the textbook way: one transaction per order that
selects free seats ``FOR UPDATE``, marks them sold and writes the order and its tickets. An order is
final when its POST is answered (202 ``SUCCESS``, or 409 ``SOLD_OUT``), so there is no queue and no
cache; the database's row locks are the whole concurrency story. Run with
``python -m railbook.bench.naive --port P --workers 2`` and ``RAILBOOK_BENCH_NAIVE_DSN`` set.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import jwt
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

from railbook.bench.naive_orders import Refusal, book, free_seats, mask, order_answer, price, yuan

SECRET = "naive-bench-" + "y" * 40
LETTERS = {"business": "ACF", "first": "ACDF", "second": "ABCDF"}
HASHER = PasswordHash((Argon2Hasher(time_cost=1, memory_cost=1024, parallelism=1),))

SCHEMA = """
CREATE TABLE member (id bigserial PRIMARY KEY, mobile text UNIQUE NOT NULL, name text NOT NULL,
  password_hash text NOT NULL, role text NOT NULL DEFAULT 'member');
CREATE TABLE passenger (id bigserial PRIMARY KEY, member_id bigint NOT NULL REFERENCES member,
  name text NOT NULL, id_card text NOT NULL, type text NOT NULL);
CREATE TABLE station (id serial PRIMARY KEY, name text UNIQUE NOT NULL, code text UNIQUE NOT NULL);
CREATE TABLE train (code text PRIMARY KEY, spec jsonb NOT NULL);
CREATE TABLE train_day (id serial PRIMARY KEY, code text NOT NULL, date date NOT NULL,
  stations text[] NOT NULL, km int[] NOT NULL, UNIQUE (code, date));
CREATE TABLE seat (id bigserial PRIMARY KEY, train_day_id int NOT NULL REFERENCES train_day,
  seat_class text NOT NULL, carriage int NOT NULL, seat_row int NOT NULL, letter text NOT NULL,
  sold_mask bigint NOT NULL DEFAULT 0);
CREATE INDEX seat_by_class ON seat (train_day_id, seat_class, id);
CREATE TABLE "order" (id uuid PRIMARY KEY, member_id bigint NOT NULL, train_day_id int NOT NULL,
  from_index int NOT NULL, to_index int NOT NULL, status text NOT NULL, payment_status text NOT NULL,
  total_fen int NOT NULL, created_at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE TABLE ticket (id uuid PRIMARY KEY, order_id uuid NOT NULL REFERENCES "order",
  train_day_id int NOT NULL, passenger_id bigint NOT NULL, seat_id bigint NOT NULL,
  seat_class text NOT NULL, seat_name text NOT NULL, from_index int NOT NULL, to_index int NOT NULL,
  price_fen int NOT NULL, status text NOT NULL, created_at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE INDEX ticket_by_order ON ticket (order_id);
CREATE INDEX ticket_by_passenger ON ticket (passenger_id);
CREATE TABLE payment (id bigserial PRIMARY KEY, order_id uuid NOT NULL, kind text NOT NULL,
  amount_fen int NOT NULL, created_at timestamptz NOT NULL DEFAULT clock_timestamp());
"""


async def create_schema(dsn: str, admin_mobile: str, admin_password: str) -> None:
    """Create the tables in an empty database and the admin member."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(SCHEMA)
        await conn.execute(
            "INSERT INTO member (mobile, name, password_hash, role) VALUES ($1, 'admin', $2, 'admin')",
            admin_mobile,
            HASHER.hash(admin_password),
        )
    finally:
        await conn.close()


def _member(request: Request) -> tuple[int, str]:
    header = request.headers.get("authorization", "")
    try:
        claims = jwt.decode(header.removeprefix("Bearer "), SECRET, algorithms=["HS256"])
    except jwt.PyJWTError:
        raise Refusal(401, "UNAUTHORIZED") from None
    return int(claims["sub"]), str(claims["role"])


def _admin(request: Request) -> None:
    if _member(request)[1] != "admin":
        raise Refusal(404, "NOT_FOUND")


def create_app() -> FastAPI:
    """The naive ticketing app (a uvicorn factory)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.pool = await asyncpg.create_pool(
            os.environ["RAILBOOK_BENCH_NAIVE_DSN"], min_size=2, max_size=10
        )
        yield
        await app.state.pool.close()

    app = FastAPI(lifespan=lifespan)

    @app.exception_handler(Refusal)
    async def refused(request: Request, exc: Refusal) -> JSONResponse:
        return JSONResponse({"error": {"code": exc.code, "message": str(exc), "details": {}}}, exc.status)

    def pool(request: Request) -> asyncpg.Pool:
        return request.app.state.pool

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/api/v1/auth/register", status_code=201)
    async def register(request: Request) -> dict[str, Any]:
        body = await request.json()
        try:
            mid = await pool(request).fetchval(
                "INSERT INTO member (mobile, name, password_hash) VALUES ($1, $2, $3) RETURNING id",
                body["mobile"],
                body["name"],
                HASHER.hash(body["password"]),
            )
        except asyncpg.UniqueViolationError:
            raise Refusal(409, "MOBILE_TAKEN") from None
        return {"member_id": mid}

    @app.post("/api/v1/auth/login")
    async def login(request: Request) -> dict[str, Any]:
        body = await request.json()
        row = await pool(request).fetchrow(
            "SELECT id, password_hash, role FROM member WHERE mobile = $1", body["mobile"]
        )
        if row is None or not HASHER.verify(body["password"], row["password_hash"]):
            raise Refusal(401, "BAD_CREDENTIALS")
        claims = {"sub": str(row["id"]), "role": row["role"], "exp": int(time.time()) + 3600}
        return {"access_token": jwt.encode(claims, SECRET), "token_type": "bearer", "expires_in": 3600}

    @app.post("/api/v1/passengers", status_code=201)
    async def add_passenger(request: Request) -> dict[str, Any]:
        member_id, _ = _member(request)
        body = await request.json()
        pid = await pool(request).fetchval(
            "INSERT INTO passenger (member_id, name, id_card, type) VALUES ($1, $2, $3, $4) RETURNING id",
            member_id,
            body["name"],
            body["id_card"],
            body.get("type", "adult"),
        )
        return {"passenger_id": pid, "name": body["name"]}

    @app.post("/api/v1/admin/stations", status_code=201)
    async def add_station(request: Request) -> dict[str, Any]:
        _admin(request)
        body = await request.json()
        sid = await pool(request).fetchval(
            "INSERT INTO station (name, code) VALUES ($1, $2) RETURNING id", body["name"], body["code"]
        )
        return {"station_id": sid, "name": body["name"], "code": body["code"]}

    @app.post("/api/v1/admin/trains", status_code=201)
    async def add_train(request: Request) -> dict[str, Any]:
        _admin(request)
        body = await request.json()
        await pool(request).execute(
            "INSERT INTO train (code, spec) VALUES ($1, $2::jsonb)", body["code"], _dumps(body)
        )
        return dict(body)

    @app.post("/api/v1/admin/sales/open")
    async def open_sale(request: Request) -> dict[str, Any]:
        _admin(request)
        date = dt.date.fromisoformat((await request.json())["date"])
        opened = []
        async with pool(request).acquire() as conn, conn.transaction():
            for row in await conn.fetch("SELECT code, spec FROM train ORDER BY code"):
                spec = _loads(row["spec"])
                day_id = await conn.fetchval(
                    "INSERT INTO train_day (code, date, stations, km) VALUES ($1, $2, $3, $4) "
                    "ON CONFLICT DO NOTHING RETURNING id",
                    row["code"],
                    date,
                    [s["station"] for s in spec["stops"]],
                    [s["km"] for s in spec["stops"]],
                )
                if day_id is None:
                    continue
                seats = [
                    (day_id, c["seat_class"], c["carriage"], r, letter)
                    for c in spec["carriages"]
                    for r in range(1, c["rows"] + 1)
                    for letter in LETTERS[c["seat_class"]]
                ]
                await conn.copy_records_to_table(
                    "seat",
                    records=seats,
                    columns=["train_day_id", "seat_class", "carriage", "seat_row", "letter"],
                )
                opened.append({"date": date.isoformat(), "train_code": row["code"]})
        return {"opened": opened, "already_open": []}

    @app.get("/api/v1/trains/search")
    async def search(request: Request) -> list[dict[str, Any]]:
        q = request.query_params
        date = dt.date.fromisoformat(q["date"])
        out = []
        async with pool(request).acquire() as conn:
            for day in await conn.fetch("SELECT * FROM train_day WHERE date = $1 ORDER BY code", date):
                stations = list(day["stations"])
                if q["from"] not in stations or q["to"] not in stations:
                    continue
                i, j = stations.index(q["from"]), stations.index(q["to"])
                if i >= j:
                    continue
                rows = await conn.fetch(
                    "SELECT seat_class, count(*) FILTER (WHERE sold_mask & $2 = 0) AS free FROM seat "
                    "WHERE train_day_id = $1 GROUP BY seat_class",
                    day["id"],
                    mask(i, j),
                )
                seats = {
                    r["seat_class"]: {
                        "remaining": r["free"],
                        "price": yuan(price(day["km"], i, j, r["seat_class"])),
                    }
                    for r in rows
                }
                out.append(
                    {
                        "train_code": day["code"],
                        "date": date.isoformat(),
                        "from": {"station": stations[i], "index": i},
                        "to": {"station": stations[j], "index": j},
                        "seats": seats,
                    }
                )
        return out

    @app.post("/api/v1/orders", status_code=202)
    async def placeorder_answer(request: Request) -> dict[str, Any]:
        member_id, _ = _member(request)
        body = await request.json()
        for attempt in range(3):
            try:
                async with pool(request).acquire() as conn, conn.transaction():
                    return await book(conn, member_id, body)
            except asyncpg.DeadlockDetectedError:
                # Orders with seat letters lock rows out of id order: PostgreSQL breaks the cycle
                # by failing one, which tries again.
                if attempt == 2:
                    raise Refusal(503, "UNAVAILABLE") from None
        raise AssertionError("unreachable")

    @app.get("/api/v1/orders/{order_id}")
    async def readorder_answer(order_id: uuid.UUID, request: Request) -> dict[str, Any]:
        member_id, _ = _member(request)
        async with pool(request).acquire() as conn:
            return await order_answer(conn, order_id, member_id)

    @app.post("/api/v1/orders/{order_id}/pay")
    async def pay(order_id: uuid.UUID, request: Request) -> dict[str, Any]:
        member_id, _ = _member(request)
        async with pool(request).acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                'SELECT status, payment_status, total_fen FROM "order" '
                "WHERE id = $1 AND member_id = $2 FOR UPDATE",
                order_id,
                member_id,
            )
            if row is None:
                raise Refusal(404, "ORDER_NOT_FOUND")
            if row["status"] != "SUCCESS" or row["payment_status"] != "UNPAID":
                raise Refusal(409, "NOT_PAYABLE")
            await conn.execute(
                "INSERT INTO payment (order_id, kind, amount_fen) VALUES ($1, 'pay', $2)",
                order_id,
                row["total_fen"],
            )
            await conn.execute("UPDATE \"order\" SET payment_status = 'PAID' WHERE id = $1", order_id)
            await conn.execute(
                "UPDATE ticket SET status = 'PAID' WHERE order_id = $1 AND status = 'UNPAID'", order_id
            )
            return await order_answer(conn, order_id, member_id)

    @app.post("/api/v1/orders/{order_id}/cancel")
    async def cancel(order_id: uuid.UUID, request: Request) -> dict[str, Any]:
        member_id, _ = _member(request)
        async with pool(request).acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                'SELECT status, payment_status FROM "order" WHERE id = $1 AND member_id = $2 FOR UPDATE',
                order_id,
                member_id,
            )
            if row is None:
                raise Refusal(404, "ORDER_NOT_FOUND")
            if row["status"] != "SUCCESS" or row["payment_status"] != "UNPAID":
                raise Refusal(409, "NOT_CANCELLABLE")
            await free_seats(conn, "order_id = $1 AND status = 'UNPAID'", order_id, "CANCELLED")
            await conn.execute(
                "UPDATE \"order\" SET status = 'CANCEL', payment_status = 'NONE' WHERE id = $1", order_id
            )
            return await order_answer(conn, order_id, member_id)

    @app.post("/api/v1/tickets/{ticket_id}/refund")
    async def refund(ticket_id: uuid.UUID, request: Request) -> dict[str, Any]:
        member_id, _ = _member(request)
        async with pool(request).acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                'SELECT t.order_id, t.price_fen FROM ticket t JOIN "order" o ON o.id = t.order_id '
                "WHERE t.id = $1 AND o.member_id = $2 AND t.status = 'PAID' FOR UPDATE OF t",
                ticket_id,
                member_id,
            )
            if row is None:
                raise Refusal(409, "NOT_REFUNDABLE")
            await free_seats(conn, "id = $1", ticket_id, "REFUNDED")
            # Eight days or more before departure: no fee (the bench sells that far ahead).
            await conn.execute(
                "INSERT INTO payment (order_id, kind, amount_fen) VALUES ($1, 'refund', $2)",
                row["order_id"],
                row["price_fen"],
            )
            return {"refund_amount": yuan(row["price_fen"]), "fee": "0.00"}

    return app


def _dumps(value: Any) -> str:
    import json

    return json.dumps(value, ensure_ascii=False)


def _loads(value: Any) -> Any:
    import json

    return json.loads(value) if isinstance(value, str) else value


def main() -> None:
    """``python -m railbook.bench.naive --port P --workers N``."""
    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    uvicorn.run(
        "railbook.bench.naive:create_app",
        factory=True,
        host="127.0.0.1",
        port=args.port,
        workers=args.workers,
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
