"""An automatic pipeline that notes what it is handed, for tests that count round trips."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis

from railbook.adapters.redis.autopipe import AutoPipeline


class Recording(AutoPipeline):
    """Shared batches that note each group handed over (one group is one round trip at most)."""

    def __init__(self, redis: Redis) -> None:
        super().__init__(redis)
        self.groups: list[list[tuple[Any, ...]]] = []

    async def execute(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        self.groups.append(list(commands))
        return await super().execute(commands)
