"""Password hashing for logins: Argon2, bounded so a login storm cannot starve bookings."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

from railbook.config import Settings
from railbook.domain.errors import LoginBusy


class PasswordHasher:
    """Argon2 off the event loop, with a bounded number of hashes at a time.

    Invariant: at most ``concurrency`` hashes run at once (each in a worker thread) and at most
    ``queue_limit`` more wait; beyond that a login is refused with 503 at once. So a login storm
    costs a fixed share of the CPU and never holds the event loop, and bookings keep flowing.
    """

    def __init__(self, settings: Settings, *, concurrency: int | None = None, queue_limit: int | None = None):
        self._hash = PasswordHash(
            (
                Argon2Hasher(
                    time_cost=settings.argon2_time_cost,
                    memory_cost=settings.argon2_memory_cost,
                    parallelism=1,
                ),
            )
        )
        self.concurrency = concurrency or max(1, (os.cpu_count() or 2) // 2)
        self.queue_limit = queue_limit if queue_limit is not None else self.concurrency * 16
        self._slots = asyncio.Semaphore(self.concurrency)
        self._waiting = 0
        self._dummy: str | None = None

    async def _run(self, fn: Any, *args: Any) -> Any:
        if self._waiting >= self.queue_limit + self.concurrency:
            raise LoginBusy("Too many logins at once; retry shortly.", retry_after=1)
        self._waiting += 1
        try:
            async with self._slots:
                return await asyncio.to_thread(fn, *args)
        finally:
            self._waiting -= 1

    async def hash(self, password: str) -> str:
        result: str = await self._run(self._hash.hash, password)
        return result

    async def verify(self, password: str, hashed: str | None) -> tuple[bool, str | None]:
        """(matches, new hash if the parameters changed). With no stored hash, a dummy one is
        checked so unknown mobiles take as long as wrong passwords."""
        if hashed is None:
            if self._dummy is None:
                self._dummy = await self.hash("railbook-no-such-member")
            await self._run(self._hash.verify_and_update, password, self._dummy)
            return False, None
        ok, updated = await self._run(self._hash.verify_and_update, password, hashed)
        return bool(ok), updated
