"""Background tasks of a process: the in-process roles of ``railbook serve``."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from railbook.bootstrap import Container


@dataclass
class Background:
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def start_background(container: Container) -> Background:
    """Start the worker and scheduler loops inside this process."""
    return Background()
