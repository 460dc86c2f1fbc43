"""The after-sale loop: completes ticket changes, expires unpaid orders, retries unconfirmed seat
returns, serves waitlists and prunes old events. Safe to run in several processes (each step locks
what it takes)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from railbook.adapters.outage import is_store_outage
from railbook.bootstrap import Container
from railbook.services.after_sale.cancel import expire_unpaid, retry_order_seat_returns
from railbook.services.after_sale.change import apply_changes
from railbook.services.after_sale.refund import retry_ticket_seat_returns
from railbook.services.after_sale.waitlist import sweep_waitlists
from railbook.workers.outbox import prune_events

log = structlog.get_logger(__name__)

INTERVAL_S = 1.0

STEPS: tuple[tuple[str, Callable[[Container], Awaitable[Any]]], ...] = (
    ("changes", apply_changes),
    ("expired", expire_unpaid),
    ("orders_rereleased", retry_order_seat_returns),
    ("tickets_rereleased", retry_ticket_seat_returns),
    ("waitlist_filled", sweep_waitlists),
    ("events_pruned", prune_events),
)


async def expiry_pass(container: Container) -> dict[str, Any]:
    """One pass over every step; a failing step is logged and the others still run."""
    results: dict[str, Any] = {}
    for name, step in STEPS:
        try:
            results[name] = await step(container)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if is_store_outage(exc):
                log.warning("expiry_step_store_unavailable", step=name, error=repr(exc)[:200])
            else:
                log.exception("expiry_step_failed", step=name)
            results[name] = None
    return results


async def run_expiry(container: Container, *, interval: float = INTERVAL_S) -> None:
    """Run ``expiry_pass`` forever, about once a second."""
    while True:
        await expiry_pass(container)
        await asyncio.sleep(interval)
