"""The end-of-run audit of the flash-sale bench, from the stores and the API, never from server code.

Checked for each design, once every accepted order has reached a final status:
- no seat segment sold twice (two active tickets of one seat whose journeys overlap);
- sold <= capacity on every segment of every class;
- the seat counts the server sells from equal the ones the tickets in the database imply: the
  ``remaining`` that search answers (railbook: from the Redis allocator; naive: from the seat
  masks) for journeys of every train, and for railbook also ``railbook inventory check`` (the
  documented command comparing the allocator in Redis with the system of record);
- every accepted order is in the database with a final status that agrees with what its client saw;
- money balanced: payments - refunds = the prices of the paid tickets, and = what the clients paid
  less what they were refunded.
"""

from __future__ import annotations

import asyncio
import random
import sys
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import asyncpg
import httpx

from railbook.bench.crowd import FINAL, Tally
from railbook.bench.scenario import Plan
from railbook.bench.site import Site

ACTIVE = ["UNPAID", "PAID"]


@dataclass(frozen=True)
class Schema:
    """Where each design keeps the facts the audit reads."""

    seat_table: str
    seat_day: str  # the seat table's train-day column
    ticket_seat: str  # the ticket's seat column
    ticket_day: str
    day_id_sql: str  # $1 train code, $2 date -> the train-day id
    pay_sql: str  # -> (payments, refunds) in fen
    committed_sql: str  # -> (committed orders, tickets written)


SCHEMAS = {
    "railbook": Schema(
        "daily_seat",
        "daily_train_id",
        "daily_seat_id",
        "daily_train_id",
        "SELECT id FROM daily_train WHERE train_code = $1 AND service_date = $2",
        "SELECT coalesce(sum(amount_fen) FILTER (WHERE kind = 'pay'), 0), "
        "coalesce(sum(amount_fen) FILTER (WHERE kind = 'refund'), 0) FROM payment WHERE status = 'SUCCEEDED'",
        "SELECT (SELECT count(*) FROM \"order\" WHERE status NOT IN ('INIT', 'PENDING')), "
        "(SELECT count(*) FROM ticket)",
    ),
    "naive": Schema(
        "seat",
        "train_day_id",
        "seat_id",
        "train_day_id",
        "SELECT id FROM train_day WHERE code = $1 AND date = $2",
        "SELECT coalesce(sum(amount_fen) FILTER (WHERE kind = 'pay'), 0), "
        "coalesce(sum(amount_fen) FILTER (WHERE kind = 'refund'), 0) FROM payment",
        'SELECT (SELECT count(*) FROM "order"), (SELECT count(*) FROM ticket)',
    ),
}


async def committed(conn: asyncpg.Connection, design: str) -> tuple[int, int]:
    """Orders committed and tickets written so far, from the database."""
    row = await conn.fetchrow(SCHEMAS[design].committed_sql)
    assert row is not None
    return int(row[0]), int(row[1])


async def wait_final(site: Site, accepted: int, within_s: float = 300.0) -> float:
    """Wait until the database holds every accepted order committed; the seconds it took."""
    conn = await asyncpg.connect(site.dsn)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    try:
        while loop.time() - t0 < within_s:
            orders, _ = await committed(conn, site.design)
            if orders >= accepted:
                break
            await asyncio.sleep(0.1)
    finally:
        await conn.close()
    return loop.time() - t0


async def _remaining_from_tickets(
    conn: asyncpg.Connection, s: Schema, day_id: int, seat_class: str, i: int, j: int
) -> int:
    return int(
        await conn.fetchval(
            f"SELECT count(*) FROM {s.seat_table} x WHERE x.{s.seat_day} = $1 AND x.seat_class = $2 "
            f"AND NOT EXISTS (SELECT 1 FROM ticket t WHERE t.{s.ticket_seat} = x.id AND t.status = ANY($5) "
            "AND t.from_index < $4 AND $3 < t.to_index)",
            day_id,
            seat_class,
            i,
            j,
            ACTIVE,
        )
    )


async def _search_vs_tickets(site: Site, plan: Plan, conn: asyncpg.Connection, s: Schema) -> list[str]:
    """Search's ``remaining`` against the tickets, for a sample of journeys on every train."""
    import datetime as dt

    rng = random.Random(5)
    n = len(plan.stations)
    pairs = {(0, n - 1), (0, 1), (n - 2, n - 1)} | {tuple(sorted(rng.sample(range(n), 2))) for _ in range(12)}
    date = dt.date.fromisoformat(plan.date)
    days = {code: await conn.fetchval(s.day_id_sql, code, date) for code in plan.trains}
    problems = []
    async with httpx.AsyncClient(base_url=site.url, timeout=30) as client:
        for i, j in sorted(pairs):
            got = await client.get(
                f"/api/v1/trains/search?from={quote(plan.stations[i])}&to={quote(plan.stations[j])}&date={plan.date}"
            )
            for result in got.json():
                code = result["train_code"]
                for seat_class, info in result["seats"].items():
                    want = await _remaining_from_tickets(conn, s, days[code], seat_class, i, j)
                    if info["remaining"] != want:
                        problems.append(
                            f"{code} {seat_class} {i}-{j}: search {info['remaining']}, tickets {want}"
                        )
    return problems


async def _inventory_check(site: Site, date: str) -> tuple[str, int]:
    """``railbook inventory check --date D`` against the site: its output's end and exit code. Tried
    again when the database refused the connection (a PostgreSQL shared with other work may be full)."""
    for _ in range(5):
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "railbook.cli",
            "inventory",
            "check",
            "--date",
            date,
            env=site.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        said, _ = await asyncio.wait_for(proc.communicate(), 300)
        text = said.decode(errors="replace").strip()
        if "too many clients" not in text:
            break
        await asyncio.sleep(2)
    return text[-500:], proc.returncode if proc.returncode is not None else -1


async def audit(site: Site, plan: Plan, tally: Tally) -> dict[str, Any]:
    """Every check of the module doc: {check: {"ok": bool, ...facts}}."""
    s = SCHEMAS[site.design]
    await asyncio.sleep(1.5)  # let search's short-lived answers (bounded at 1 s) pass
    conn = await asyncpg.connect(site.dsn)
    out: dict[str, Any] = {}
    try:
        twice = await conn.fetchval(
            f"SELECT count(*) FROM ticket a JOIN ticket b ON a.{s.ticket_seat} = b.{s.ticket_seat} "
            "AND a.id < b.id AND a.from_index < b.to_index AND b.from_index < a.to_index "
            "WHERE a.status = ANY($1) AND b.status = ANY($1)",
            ACTIVE,
        )
        out["no segment sold twice"] = {"ok": twice == 0, "overlapping pairs": twice}
        over = await conn.fetch(
            f"WITH cap AS (SELECT {s.seat_day} AS d, seat_class, count(*) AS n FROM {s.seat_table} "
            "GROUP BY 1, 2), "
            f"sold AS (SELECT {s.ticket_day} AS d, seat_class, k, count(*) AS n FROM ticket, "
            "generate_series(from_index, to_index - 1) AS k WHERE status = ANY($1) GROUP BY 1, 2, 3) "
            "SELECT sold.d, sold.seat_class, sold.k, sold.n, cap.n AS cap "
            "FROM sold JOIN cap USING (d, seat_class) WHERE sold.n > cap.n",
            ACTIVE,
        )
        load = await conn.fetchrow(
            f"SELECT (SELECT coalesce(sum(to_index - from_index), 0) FROM ticket WHERE status = ANY($1)), "
            f"(SELECT count(*) FROM {s.seat_table})",
            ACTIVE,
        )
        seat_segments = int(load[1]) * (len(plan.stations) - 1)
        out["sold <= capacity on every segment"] = {
            "ok": not over,
            "segments over": len(over),
            "seat-segments sold": int(load[0]),
            "seat-segments on sale": seat_segments,
        }
        mismatch = await _search_vs_tickets(site, plan, conn, s)
        check: dict[str, Any] = {"ok": not mismatch, "mismatches": mismatch[:10]}
        if site.design == "railbook":
            said, code = await _inventory_check(site, plan.date)
            check["railbook inventory check"] = said
            check["ok"] = check["ok"] and code == 0
        out["seat counts = ticket-derived counts"] = check

        seen = {o["order_id"]: o for o in tally.orders}
        rows = await conn.fetch(
            'SELECT id::text AS id, status FROM "order" WHERE id::text = ANY($1)', list(seen)
        )
        in_db = {r["id"]: r["status"] for r in rows}
        missing = [k for k in seen if k not in in_db]
        not_final = [k for k, v in in_db.items() if v not in FINAL]
        disagree = [
            k
            for k, v in in_db.items()
            if v != seen[k]["status"] and not (seen[k]["status"] == "SUCCESS" and v == "CANCEL")
        ]
        total = int(await conn.fetchval('SELECT count(*) FROM "order"'))
        out["every accepted order final"] = {
            "ok": not missing and not not_final and not disagree and total == len(seen),
            "accepted": len(seen),
            "orders in database": total,
            "missing": len(missing),
            "not final": len(not_final),
            "status unlike the client's": len(disagree),
        }
        pays, refunds = await conn.fetchrow(s.pay_sql)
        paid_tickets = int(
            await conn.fetchval("SELECT coalesce(sum(price_fen), 0) FROM ticket WHERE status = 'PAID'")
        )
        client_net = tally.paid_fen - tally.refunded_fen
        out["money balanced"] = {
            "ok": int(pays) - int(refunds) == paid_tickets == client_net,
            "payments": int(pays) / 100,
            "refunds": int(refunds) / 100,
            "paid tickets": paid_tickets / 100,
            "clients paid less refunded": client_net / 100,
        }
    finally:
        await conn.close()
    return out
