"""Background tasks of a process: the in-process roles of ``railbook serve``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from railbook.bootstrap import Container

log = structlog.get_logger(__name__)


@dataclass
class Background:
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def stop(self, grace_s: float = 10.0) -> None:
        """Cancel every role; a role that ignores cancellation is reported, not waited for forever."""
        for task in self.tasks:
            task.cancel()
        if not self.tasks:
            return
        _, stuck = await asyncio.wait(self.tasks, timeout=grace_s)
        for task in stuck:
            log.error("background_role_did_not_stop", role=task.get_name())


async def _guarded(name: str, loop: Callable[[], Awaitable[Any]]) -> None:
    """Run a role loop; if it dies of an unexpected error, log it and start it again."""
    while True:
        try:
            await loop()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("background_role_failed", role=name)
            await asyncio.sleep(1.0)


async def start_background(container: Container) -> Background:
    """Start the order committer, and the scheduler, expiry and outbox loops, inside this process."""
    from railbook.workers.expiry import run_expiry
    from railbook.workers.order_worker import committer
    from railbook.workers.outbox import run_relay
    from railbook.workers.scheduler import run_scheduler

    background = Background()
    roles: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
        ("order_committer", committer(container)),
        ("scheduler", lambda: run_scheduler(container)),
        ("expiry", lambda: run_expiry(container)),
        ("outbox_relay", lambda: run_relay(container)),
    ]
    for name, loop in roles:
        background.tasks.append(asyncio.create_task(_guarded(name, loop), name=name))
    return background
