"""Anti-bot state in process memory (embedded mode): captcha answers and failed-login counts. Like
the rest of the embedded protections it lives and dies with the process."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

# Past this many live entries the expired ones are swept out (bounds memory under a flood).
SWEEP_ABOVE = 10_000


def _sweep(table: dict[str, tuple[str, float]] | dict[str, tuple[int, float]], now: float) -> None:
    if len(table) > SWEEP_ABOVE:
        for key in [k for k, (_, expires) in table.items() if expires <= now]:
            del table[key]


@dataclass
class MemoryCaptchaStore:
    """The CaptchaStore of the embedded mode. ``take`` pops without awaiting, so it is atomic on the
    event loop."""

    answers: dict[str, tuple[str, float]] = field(default_factory=dict)

    async def keep(self, captcha_id: str, answer: str, ttl_seconds: int) -> None:
        now = time.monotonic()
        _sweep(self.answers, now)
        self.answers[captcha_id] = (answer, now + ttl_seconds)

    async def take(self, captcha_id: str) -> str | None:
        held = self.answers.pop(captcha_id, None)
        return held[0] if held is not None and held[1] > time.monotonic() else None

    async def peek(self, captcha_id: str) -> str | None:
        held = self.answers.get(captcha_id)
        return held[0] if held is not None and held[1] > time.monotonic() else None


@dataclass
class MemoryLoginThrottle:
    """The LoginThrottle of the embedded mode: (count, end of window) per mobile and per address."""

    counts: dict[str, tuple[int, float]] = field(default_factory=dict)

    def _count(self, key: str, now: float) -> int:
        held = self.counts.get(key)
        return held[0] if held is not None and held[1] > now else 0

    async def failures(self, mobile: str, address: str) -> tuple[int, int]:
        now = time.monotonic()
        return self._count(f"m:{mobile}", now), self._count(f"ip:{address}", now)

    async def record_failure(self, mobile: str, address: str, window_seconds: int) -> None:
        now = time.monotonic()
        _sweep(self.counts, now)
        for key in (f"m:{mobile}", f"ip:{address}"):
            held = self.counts.get(key)
            if held is None or held[1] <= now:
                self.counts[key] = (1, now + window_seconds)
            else:
                self.counts[key] = (held[0] + 1, held[1])

    async def clear(self, mobile: str) -> None:
        self.counts.pop(f"m:{mobile}", None)
