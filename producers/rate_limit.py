"""Rate limits per client and route family: token buckets, answered 429 with Retry-After.

``AGL_RATE_LIMITS`` names the limited families, ``family=rate:burst`` separated by commas, e.g.
``publish=50:100,llm=5:10,traces=500:1000`` (requests per second refilled, bucket size). Families left out are not
limited; the default (empty) limits nothing, since the embedded stack serves one user.

The client is its API key when the request carries one (as ``producers.auth.middleware.presented_key`` reads it:
Bearer, ``X-API-Key`` or HTTP Basic; only a digest is kept), else its address. Buckets live in the API process:
with several API processes behind a balancer, each enforces its own share (set rates per process). The number of
buckets is bounded, so a flood of distinct clients cannot grow memory; the least recently seen bucket goes first
(it forgets a client that paused, which at worst grants it a fresh burst).

A refused request costs no database or broker work. Our clients (``producers.client``, the runner) and the
OpenTelemetry exporter retry 429 after Retry-After.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.responses import JSONResponse

from core.errors import ConfigError
from producers.auth.middleware import presented_key
from producers.route_families import FAMILIES, Family, route_family

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from starlette.types import ASGIApp, Receive, Scope, Send

#: Buckets kept at most (one per client and family); about 100 bytes each.
MAX_BUCKETS = 100_000


@dataclass(frozen=True)
class Limit:
    """``rate`` requests per second on average, ``burst`` at once."""

    rate: float
    burst: float


def parse_limits(text: str) -> dict[Family, Limit]:
    """``publish=50:100,llm=5`` -> limits (a missing burst is the rate, at least 1). Raises ConfigError."""
    limits: dict[Family, Limit] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, sep, spec = item.partition("=")
        rate_text, _, burst_text = spec.partition(":")
        family = next((f for f in FAMILIES if f == name.strip()), None)
        if not sep or family is None or family == "health":
            raise ConfigError(f"AGL_RATE_LIMITS: {item!r} is not family=rate[:burst] with a family of {FAMILIES[:-1]}")
        try:
            rate = float(rate_text)
            burst = float(burst_text) if burst_text else max(rate, 1.0)
        except ValueError:
            raise ConfigError(f"AGL_RATE_LIMITS: {item!r}: rate and burst are numbers") from None
        if not (math.isfinite(rate) and math.isfinite(burst) and rate > 0 and burst >= 1):
            raise ConfigError(f"AGL_RATE_LIMITS: {item!r}: the rate must be > 0 and the burst >= 1")
        limits[family] = Limit(rate, burst)
    return limits


class TokenBuckets:
    """One bucket per key, bounded in number. ``take`` answers 0 (allowed) or the seconds to wait."""

    def __init__(self, limit: Limit, clock: Callable[[], float] = time.monotonic, max_buckets: int = MAX_BUCKETS):
        self.limit, self.clock, self.max_buckets = limit, clock, max_buckets
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)

    def take(self, key: str) -> float:
        now = self.clock()
        tokens, at = self._buckets.pop(key, (self.limit.burst, now))
        tokens = min(self.limit.burst, tokens + (now - at) * self.limit.rate)
        wait = 0.0
        if tokens >= 1:
            tokens -= 1
        else:
            wait = (1 - tokens) / self.limit.rate
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > self.max_buckets:
            self._buckets.popitem(last=False)
        return wait


def client_of(scope: Scope) -> str:
    """The API key's digest when the request carries one (read as the key check reads it), else the peer's address."""
    key = presented_key(scope)
    if key:
        return "key:" + hashlib.sha256(key.encode("latin-1")).hexdigest()[:32]
    peer = scope.get("client")
    return f"addr:{peer[0] if peer else '?'}"


class RateLimit:
    """ASGI middleware: a request over its family's limit is answered 429 with Retry-After (whole seconds)."""

    def __init__(self, app: ASGIApp, limits: Mapping[Family, Limit]) -> None:
        self.app = app
        self.buckets = {family: TokenBuckets(limit) for family, limit in limits.items()}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.buckets:
            family = route_family(scope["method"], scope["path"])
            buckets = self.buckets.get(family)
            wait = buckets.take(client_of(scope)) if buckets is not None else 0.0
            if wait > 0:
                retry_after = max(1, math.ceil(wait))
                detail = f"rate limit of {family!r} requests exceeded; retry after {retry_after} s"
                answer = JSONResponse({"detail": detail}, status_code=429, headers={"Retry-After": str(retry_after)})
                await answer(scope, receive, send)
                return
        await self.app(scope, receive, send)
