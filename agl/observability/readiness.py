"""``/readyz`` answers from a cache kept ``READY_TTL_S``: a storm of probes costs one round of checks a second."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

READY_TTL_S = 1.0


class ReadinessCache:
    """The last readiness answer (ready, checks), recomputed by ``check`` at most once per ``ttl_s``."""

    def __init__(self, ttl_s: float = READY_TTL_S) -> None:
        self.ttl_s = ttl_s
        self.checked = 0
        self._at = -float("inf")
        self._value: dict[str, str] = {}
        self._lock = asyncio.Lock()

    async def get(self, check: Callable[[], Awaitable[dict[str, str]]]) -> dict[str, str]:
        async with self._lock:
            if time.monotonic() - self._at >= self.ttl_s:
                self._value = await check()
                self._at = time.monotonic()
                self.checked += 1
            return self._value
