"""The order committer: consumes accepted orders and writes them to the system of record in batches.

Distributed mode: a consumer of the train-day order streams (``adapters.redis.stream``); any number
run in parallel (``railbook worker``, which runs it with expiry and the outbox relay through
``workers.runtime``), each message acknowledged only after its batch committed.
Embedded mode: the same commit code fed by the in-process queue (``adapters.embedded.queue``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Sequence

import structlog

from railbook.adapters.outage import is_store_outage
from railbook.bootstrap import Container
from railbook.metrics import count_commits
from railbook.services.after_sale.change import settle_committed_changes
from railbook.services.booking.commit import CommitOutcome, OrderMessage, commit_batch, parse_message, settle

log = structlog.get_logger(__name__)

CLAIM_EVERY_S = 5.0
DEFAULT_CLAIM_IDLE_MS = 30_000
# A consumer that has not read for this long is taken for dead and its pending messages are claimed.
GONE_AFTER_MS = 5_000


def default_consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


async def _settle_changes(container: Container, outcome: CommitOutcome) -> None:
    """Settle the ticket changes among a committed batch at once (best effort: the after-sale loop
    settles whatever is left), before the batch's views are invalidated, so a reader of a new order
    that owes nothing goes from PENDING straight to PAID."""
    changes = [m for m in outcome.committed + outcome.failed if m.change_of]
    if not changes:
        return
    try:
        await settle_committed_changes(container, changes)
    except Exception as exc:
        log.warning("change_settlement_deferred", n=len(changes), error=repr(exc)[:200])


async def _commit_until_done(
    container: Container, messages: Sequence[OrderMessage], stop: asyncio.Event | None
) -> CommitOutcome | None:
    """Commit, retrying transient store errors with backoff; None when stopping first."""
    delay = 0.1
    while True:
        try:
            return await commit_batch(container, messages)
        except Exception as exc:
            if not is_store_outage(exc):
                raise
            log.warning("order_commit_store_unavailable", error=repr(exc)[:200], retry_in=delay)
        if stop is not None and stop.is_set():
            return None
        await asyncio.sleep(delay)
        delay = min(delay * 2, 5.0)


async def run_stream_committer(
    container: Container,
    name: str | None = None,
    *,
    claim_idle_ms: int = DEFAULT_CLAIM_IDLE_MS,
    stop: asyncio.Event | None = None,
) -> None:
    """Consume every train-day order stream until cancelled (or ``stop`` is set)."""
    from railbook.adapters.redis.stream import OrderStreamConsumer, StreamEntry, make_blocking_redis

    settings = container.settings
    assert settings.redis_url
    client = make_blocking_redis(settings.redis_url, cluster=settings.redis_cluster)
    consumer = OrderStreamConsumer(client, name or default_consumer_name())
    batch = settings.worker_batch_size
    last_claim = 0.0
    log.info("order_committer_started", consumer=consumer.consumer)
    try:
        backlog: list[StreamEntry] = []
        # Our own delivered-but-unacknowledged messages are read again at start and after any error
        # (a commit or an acknowledgement cut short by a store outage), not left for the claim timer.
        reread_own = True
        while stop is None or not stop.is_set():
            try:
                if reread_own:
                    await consumer.refresh(force=True)
                    backlog = await consumer.own_pending(batch)
                    reread_own = False
                await consumer.refresh()
                entries = backlog
                backlog = []
                if not entries and time.monotonic() - last_claim >= CLAIM_EVERY_S:
                    last_claim = time.monotonic()
                    entries = await consumer.claim_from_gone(GONE_AFTER_MS, batch)
                    if not entries:
                        entries = await consumer.claim(claim_idle_ms, batch)
                if not entries:
                    if not consumer.streams:
                        await asyncio.sleep(settings.worker_block_ms / 1000)
                        continue
                    entries = await consumer.read(batch, settings.worker_block_ms)
                    if entries and len(entries) < batch and settings.worker_linger_ms:
                        # More are likely on their way (a crowd): let the batch fill for a moment.
                        await asyncio.sleep(settings.worker_linger_ms / 1000)
                        entries += await consumer.read(batch - len(entries), None)
                if not entries:
                    continue
                messages: list[OrderMessage] = []
                poison = []
                for e in entries:
                    try:
                        messages.append(parse_message(e.fields))
                    except (KeyError, ValueError, TypeError):
                        log.error("order_message_unreadable", stream=e.stream, entry_id=e.entry_id)
                        poison.append(e)
                outcome = await _commit_until_done(container, messages, stop)
                if outcome is None:
                    return
                await _settle_changes(container, outcome)
                # Settle before acknowledging: both are idempotent, and a settle cut short by an outage
                # is then retried with the redelivered messages instead of leaving tokens and markers.
                await settle(container, outcome)
                await consumer.ack(entries)
                count_commits(outcome)
                log.debug(
                    "order_batch_committed",
                    n=len(outcome.committed),
                    failed=len(outcome.failed),
                    poison=len(poison),
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Not acknowledged: the messages stay pending under our name and are read again.
                reread_own = True
                if is_store_outage(exc):
                    log.warning("order_committer_store_unavailable", error=repr(exc)[:200])
                else:
                    log.exception("order_committer_error")
                await asyncio.sleep(1.0)
    finally:
        with contextlib.suppress(Exception):
            await client.aclose()


async def run_queue_committer(container: Container, *, stop: asyncio.Event | None = None) -> None:
    """Embedded mode: commit what the in-process allocator queued, with the same commit code."""

    queue = container.queue
    assert queue is not None, "the embedded container has an order queue"
    settings = container.settings
    while stop is None or not stop.is_set():
        items = await queue.take(settings.worker_batch_size, settings.worker_block_ms / 1000)
        if not items:
            continue
        messages = []
        for _, _, fields in items:
            try:
                messages.append(parse_message(fields))
            except (KeyError, ValueError, TypeError):
                log.error("order_message_unreadable", fields=str(fields)[:200])
        while True:
            try:
                outcome = await _commit_until_done(container, messages, None)
                assert outcome is not None
                break
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("order_committer_error")
                await asyncio.sleep(1.0)
        await _settle_changes(container, outcome)
        await settle(container, outcome)
        queue.done([m.order_id for m in messages])
        count_commits(outcome)
