"""How the background roles run: as tasks inside one process (``start_background``; all of them in
``railbook serve``, some in ``railbook worker`` and ``railbook scheduler``), stopped the same way on
SIGTERM or SIGINT (``run_background_until_stopped``), and as processes under one parent (``supervise``:
distributed ``serve``'s API processes and the process of the background roles)."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from typing import Any

import structlog

from railbook.bootstrap import Container

log = structlog.get_logger(__name__)

# The roles that finish their current piece of work when asked to stop; the others are cancelled.
DRAINED_ROLES = frozenset({"order_committer"})
# Every background role (``railbook serve``), those of ``railbook worker``, of ``railbook scheduler``.
ALL_ROLES = ("order_committer", "scheduler", "expiry", "outbox_relay")
WORKER_ROLES = ("order_committer", "expiry", "outbox_relay")
SCHEDULER_ROLES = ("scheduler",)


@dataclass
class Background:
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    async def stop(self, grace_s: float = 10.0) -> None:
        """Let the committer finish and acknowledge its batch, then cancel every other role; a role that
        ignores cancellation is reported, not waited for forever."""
        self.stopping.set()
        draining = [t for t in self.tasks if t.get_name() in DRAINED_ROLES]
        if draining:
            await asyncio.wait(draining, timeout=grace_s)
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


async def start_background(
    container: Container, roles: Sequence[str] = ALL_ROLES, *, consumer: str | None = None
) -> Background:
    """Start ``roles`` (default: the order committer, and the scheduler, expiry and outbox loops) inside
    this process; ``consumer`` names the committer in the order streams' consumer group."""
    from railbook.workers.expiry import run_expiry
    from railbook.workers.order_worker import run_queue_committer, run_stream_committer
    from railbook.workers.outbox import run_relay
    from railbook.workers.scheduler import run_scheduler

    unknown = set(roles) - set(ALL_ROLES)
    if unknown:
        raise ValueError(f"no such background role: {sorted(unknown)}")
    background = Background()
    commit: Callable[[], Awaitable[Any]]
    if container.redis is not None:
        # Stopping ends the stream committer after its batch is acknowledged; what it has not read
        # stays in the stream for the next committer.
        commit = lambda: run_stream_committer(container, consumer, stop=background.stopping)  # noqa: E731
    else:
        commit = lambda: run_queue_committer(container)  # noqa: E731
    loops: dict[str, Callable[[], Awaitable[Any]]] = {
        "order_committer": commit,
        "scheduler": lambda: run_scheduler(container),
        "expiry": lambda: run_expiry(container),
        "outbox_relay": lambda: run_relay(container),
    }
    for name in roles:
        background.tasks.append(asyncio.create_task(_guarded(name, loops[name]), name=name))
    return background


async def run_background_until_stopped(
    container: Container, grace_s: float, roles: Sequence[str] = ALL_ROLES, *, consumer: str | None = None
) -> None:
    """Background roles as a process of their own (``serve``'s committer process, ``railbook worker``,
    ``railbook scheduler``): run them until SIGTERM or SIGINT, then stop them (``Background.stop``)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    background = await start_background(container, roles, consumer=consumer)
    log.info("background_roles_started", pid=os.getpid(), roles=list(roles))
    await stop.wait()
    log.info("background_roles_stopping", pid=os.getpid(), roles=list(roles))
    await background.stop(grace_s)
    log.info("background_roles_stopped", pid=os.getpid())


# --------------------------------------------------------------------------------------------
# Processes.

_spawn = multiprocessing.get_context("spawn")
# How often the parent looks at its signals (and, off Linux, a child at its parent).
POLL_S = 0.5


@dataclass(frozen=True)
class Child:
    """One process of the group: ``target(*args)`` runs in a fresh interpreter (spawned, not forked)."""

    name: str
    target: Callable[..., None]
    args: tuple[Any, ...] = ()


def _die_with(parent: int) -> None:
    """Have the kernel kill this process the moment ``parent`` dies (Linux), else look every
    ``POLL_S``: a parent killed outright takes its children along, as a single process would, so no
    orphan keeps the port or commits on. (A parent that is asked to stop drains them first.)"""
    if sys.platform == "linux":
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    else:

        def follow() -> None:
            while os.getppid() == parent:
                time.sleep(POLL_S)
            os.kill(os.getpid(), signal.SIGKILL)

        threading.Thread(target=follow, name="follow-parent", daemon=True).start()
    if os.getppid() != parent:  # gone before we could follow it
        os._exit(1)


def _child_main(parent: int, target: Callable[..., None], args: tuple[Any, ...]) -> None:
    """A child's first step: it dies with its parent, then runs its role."""
    _die_with(parent)
    try:
        target(*args)
    except KeyboardInterrupt:
        pass  # Ctrl-C reached the whole process group: the parent stops us too


def supervise(children: Sequence[Child], grace_s: float, *, started: Callable[[], None] | None = None) -> int:
    """Run the children until SIGTERM or SIGINT, or until one of them ends by itself; then stop the
    others with SIGTERM (each drains), wait ``grace_s`` for them and kill what is left.

    Returns the exit status for the parent: 0 after a requested stop that every child finished
    cleanly, 1 when a child ended by itself (no restart: a half-running service is worse than a
    stopped one that its process manager starts again) or had to be killed. ``started`` runs once
    every child is started (the parent drops what only the children need, such as the listening
    socket)."""
    requested: list[int] = []
    previous = {
        sig: signal.signal(sig, lambda s, _f: requested.append(s)) for sig in (signal.SIGTERM, signal.SIGINT)
    }
    processes: list[Any] = []
    failed = False
    try:
        for child in children:
            process = _spawn.Process(
                target=_child_main, args=(os.getpid(), child.target, child.args), name=child.name
            )
            process.start()
            processes.append(process)
        if started is not None:
            started()
        log.info("serve_processes_started", pids={p.name: p.pid for p in processes})
        while not requested:
            wait([p.sentinel for p in processes], timeout=POLL_S)
            gone = [p for p in processes if p.exitcode is not None]
            if gone and not requested:
                for p in gone:
                    log.error("serve_process_ended", process=p.name, pid=p.pid, exitcode=p.exitcode)
                failed = True
                break
        if requested:
            log.info("serve_stopping", signal=signal.Signals(requested[0]).name)
        failed = _stop_all(processes, grace_s) or failed
    finally:
        for p in processes:
            if p.exitcode is None:
                p.kill()
                p.join()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.info("serve_stopped", exitcode=int(failed))
    return 1 if failed else 0


def _stop_all(processes: Sequence[Any], grace_s: float) -> bool:
    """SIGTERM to every running child, then wait for all; True if one failed or had to be killed."""
    for p in processes:
        if p.exitcode is None:
            os.kill(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for p in processes:
        p.join(max(0.0, deadline - time.monotonic()))
    failed = False
    for p in processes:
        if p.exitcode is None:
            log.error("serve_process_killed", process=p.name, pid=p.pid, after_s=grace_s)
            p.kill()
            p.join()
            failed = True
        elif p.exitcode not in (0, -signal.SIGTERM):
            # -SIGTERM: uvicorn ends its process with the signal it stopped for, once drained.
            log.error("serve_process_failed", process=p.name, pid=p.pid, exitcode=p.exitcode)
            failed = True
    return failed
