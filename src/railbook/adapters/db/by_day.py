"""Reading per-day records by order id so that PostgreSQL touches one partition.

An order id issued for a service date carries it (``booking.ports.order_id_date``). A read by id
first asks the date's partition alone; when that finds nothing (an id issued before ids carried a
date, or one whose random bits only look dated), it asks again without the date, which reads every
partition's index. A found order costs one statement either way; only a miss costs two.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from railbook.services.booking.ports import order_id_date


async def rows_by_order_id(
    db: AsyncConnection | AsyncSession, stmt: Select[Any], date_column: Any, order_id: str
) -> Sequence[Row[Any]]:
    """The rows of ``stmt`` (which already selects by ``order_id``), read from the partition of the
    date the id carries, or from every partition when that finds none."""
    date = order_id_date(order_id)
    if date is not None:
        rows = (await db.execute(stmt.where(date_column == date))).all()
        if rows:
            return rows
    return (await db.execute(stmt)).all()


async def rows_by_order_id_bound(
    db: AsyncConnection | AsyncSession,
    stmts: tuple[Select[Any], Select[Any]],
    params: dict[str, Any],
    order_id: str,
) -> Sequence[Row[Any]]:
    """``rows_by_order_id`` for statements built once: ``stmts`` is the statement on one date's
    partition (its date a ``service_date`` parameter) and the same on every partition."""
    dated, undated = stmts
    date = order_id_date(order_id)
    if date is not None:
        rows = (await db.execute(dated, {**params, "service_date": date})).all()
        if rows:
            return rows
    return (await db.execute(undated, params)).all()
