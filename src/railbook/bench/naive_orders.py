"""The naive design's booking: one transaction per order, seats locked with ``SELECT … FOR UPDATE``.

Every function runs in the caller's transaction on one asyncpg connection.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

FEN_PER_KM = {"business": 150, "first": 74, "second": 46}
ACTIVE = ("UNPAID", "PAID")
TICKET_COLUMNS = [
    "id",
    "order_id",
    "train_day_id",
    "passenger_id",
    "seat_id",
    "seat_class",
    "seat_name",
    "from_index",
    "to_index",
    "price_fen",
    "status",
]


class Refusal(Exception):
    """An answer other than success, in the contract's error shape."""

    def __init__(self, status: int, code: str, message: str = "") -> None:
        super().__init__(message or code)
        self.status, self.code = status, code


def yuan(fen: int) -> str:
    """Fen as the contract's decimal yuan string."""
    return f"{fen // 100}.{fen % 100:02d}"


def mask(i: int, j: int) -> int:
    """Bits i..j-1: the segments a journey from stop i to stop j rides."""
    return ((1 << j) - 1) ^ ((1 << i) - 1)


def price(km: list[int], i: int, j: int, seat_class: str) -> int:
    """A fare by distance, rounded to 0.50 yuan."""
    fen = (km[j] - km[i]) * FEN_PER_KM[seat_class]
    return max(100, (fen + 25) // 50 * 50)


async def free_seats(conn: Any, where: str, key: Any, status: str) -> None:
    """Give the tickets' segments back to their seats and mark the tickets ``status``."""
    rows = await conn.fetch(
        f"UPDATE ticket SET status = '{status}' WHERE {where} RETURNING seat_id, from_index, to_index", key
    )
    for r in rows:
        await conn.execute(
            "UPDATE seat SET sold_mask = sold_mask & ~$2::bigint WHERE id = $1",
            r["seat_id"],
            mask(r["from_index"], r["to_index"]),
        )


async def book(conn: Any, member_id: int, body: dict[str, Any]) -> dict[str, Any]:
    """One order in the caller's transaction: lock free seats, mark them sold, write order and tickets."""
    day = await conn.fetchrow(
        "SELECT id, stations, km FROM train_day WHERE code = $1 AND date = $2",
        body["train_code"],
        dt.date.fromisoformat(body["date"]),
    )
    if day is None:
        raise Refusal(404, "TRAIN_NOT_FOUND")
    stations = list(day["stations"])
    try:
        i, j = stations.index(body["from"]), stations.index(body["to"])
    except ValueError:
        raise Refusal(404, "STATION_NOT_FOUND") from None
    if i >= j:
        raise Refusal(422, "VALIDATION_ERROR")
    passengers = body["passengers"]
    pids = [int(p["passenger_id"]) for p in passengers]
    owned = await conn.fetchval(
        "SELECT count(*) FROM passenger WHERE id = ANY($1) AND member_id = $2", pids, member_id
    )
    if owned != len(set(pids)) or len(set(pids)) != len(pids):
        raise Refusal(404, "PASSENGER_NOT_FOUND")
    busy = await conn.fetchval(
        "SELECT count(*) FROM ticket WHERE passenger_id = ANY($1) AND train_day_id = $2 AND status = ANY($3)",
        pids,
        day["id"],
        list(ACTIVE),
    )
    if busy:
        raise Refusal(409, "TRIP_CONFLICT")
    journey = mask(i, j)
    by_class: dict[str, list[dict[str, Any]]] = {}
    for p in passengers:
        by_class.setdefault(p["seat_class"], []).append(p)
    order_id = uuid.uuid4()
    tickets = []
    for seat_class, group in by_class.items():
        prefs = [p["seat_pref"] for p in group if p.get("seat_pref")]
        taken: list[Any] = []
        # A row locked by a concurrent order is re-checked once that order commits and skipped when
        # it was sold meanwhile, so one SELECT may return fewer rows than asked: ask again for the rest.
        for _ in range(8):
            rows = await conn.fetch(
                "SELECT id, carriage, seat_row, letter FROM seat WHERE train_day_id = $1 AND seat_class = $2 "
                "AND sold_mask & $3 = 0 AND NOT id = ANY($6) "
                "ORDER BY (letter = ANY($4)) DESC, id LIMIT $5 FOR UPDATE",
                day["id"],
                seat_class,
                journey,
                prefs,
                len(group) - len(taken),
                [r["id"] for r in taken],
            )
            taken.extend(rows)
            if not rows or len(taken) == len(group):
                break
        if len(taken) < len(group):
            raise Refusal(409, "SOLD_OUT")
        await conn.execute(
            "UPDATE seat SET sold_mask = sold_mask | $2 WHERE id = ANY($1)", [r["id"] for r in taken], journey
        )
        fare = price(day["km"], i, j, seat_class)
        for p, seat in zip(group, taken, strict=True):
            name = f"{seat['carriage']:02d}-{seat['seat_row']:02d}{seat['letter']}"
            tickets.append(
                (
                    uuid.uuid4(),
                    order_id,
                    day["id"],
                    int(p["passenger_id"]),
                    seat["id"],
                    seat_class,
                    name,
                    i,
                    j,
                    fare,
                    "UNPAID",
                )
            )
    await conn.execute(
        'INSERT INTO "order" (id, member_id, train_day_id, from_index, to_index, status, payment_status, '
        "total_fen) VALUES ($1, $2, $3, $4, $5, 'SUCCESS', 'UNPAID', $6)",
        order_id,
        member_id,
        day["id"],
        i,
        j,
        sum(t[9] for t in tickets),
    )
    await conn.copy_records_to_table(
        "ticket",
        records=tickets,
        columns=[
            "id",
            "order_id",
            "train_day_id",
            "passenger_id",
            "seat_id",
            "seat_class",
            "seat_name",
            "from_index",
            "to_index",
            "price_fen",
            "status",
        ],
    )
    return {"order_id": str(order_id), "status": "SUCCESS"}


async def order_answer(conn: Any, order_id: uuid.UUID, member_id: int) -> dict[str, Any]:
    row = await conn.fetchrow('SELECT * FROM "order" WHERE id = $1 AND member_id = $2', order_id, member_id)
    if row is None:
        raise Refusal(404, "ORDER_NOT_FOUND")
    tickets = await conn.fetch("SELECT * FROM ticket WHERE order_id = $1 ORDER BY seat_name", order_id)
    return {
        "order_id": str(order_id),
        "status": row["status"],
        "payment_status": row["payment_status"],
        "total": yuan(row["total_fen"]),
        "error": None,
        "tickets": [
            {
                "ticket_id": str(t["id"]),
                "passenger_id": t["passenger_id"],
                "seat": t["seat_name"],
                "seat_class": t["seat_class"],
                "price": yuan(t["price_fen"]),
                "status": t["status"],
            }
            for t in tickets
        ],
    }
