"""The PostgreSQL pool replaces connections the server closed, without a round trip per checkout."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, text

from railbook.adapters.db.engine import make_engine
from tests.support import wait_until


async def test_a_connection_the_server_closed_is_replaced_at_checkout(pg_url: str) -> None:
    engine = make_engine(pg_url, pool_size=2)
    sent: list[str] = []  # the simple queries the driver sent (transaction control, checks)
    opened: list[Any] = []  # the driver's connections, in the order they were made

    @event.listens_for(engine.sync_engine, "connect")
    def _log(_dbapi_conn: Any, record: Any) -> None:
        record.driver_connection.add_query_logger(lambda q: sent.append(q.query))
        opened.append(record.driver_connection)

    try:
        async with engine.connect() as conn:
            first_pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        async with engine.connect() as conn:  # the pooled connection is reused, nothing sent to check it
            assert (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one() == first_pid
        assert sent == ["BEGIN;", "ROLLBACK;"] * 2  # the two transactions, no checks (a ping sends ";")

        killer = make_engine(pg_url, pool_size=1)
        try:
            async with killer.connect() as conn:
                assert (
                    await conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": first_pid})
                ).scalar_one()
        finally:
            await killer.dispose()
        # The event loop has read the closed socket: the pooled connection knows it is closed.
        await wait_until(lambda: opened[0].is_closed(), timeout=5, what="the driver to see the socket closed")

        # The next checkout gets a live connection: the statement succeeds on a new backend.
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one() != first_pid
    finally:
        await engine.dispose()
