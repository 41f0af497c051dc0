"""Every route but health needs an API key with the route's scope: 401 without a live key, 403 without the scope.

A pure ASGI middleware, so a refused request is answered before its body is read. The key comes as
``Authorization: Bearer <key>``, ``X-API-Key: <key>`` or the password of HTTP Basic. Verified answers (also
"unknown or revoked") are cached in the process for ``CACHE_S`` seconds, so a request costs no query in the steady
state; a revocation is therefore seen within that time by every API process.

``GET /dashboard`` is served without a key: it is a static page holding no data, whose script sends the key given
in its URL fragment (``#key=...``, which browsers never send to a server) with every read, and asks for one when
the API answers 401.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from psycopg_pool import PoolTimeout
from starlette.responses import JSONResponse

from producers.auth.keys import parse_key, verified_scopes
from producers.auth.scopes import allows
from producers.route_families import route_family

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

    from producers.route_families import Family

#: How long a verified key (or a refused one) is trusted without asking PostgreSQL again: the revocation delay.
CACHE_S = 5.0
#: Cached answers kept at most; the oldest goes first.
CACHE_SIZE = 10_000
#: Served without a key (besides the health family): the dashboard's page, which asks for a key itself.
PUBLIC_PAGES = frozenset({("GET", "/dashboard"), ("HEAD", "/dashboard")})
#: How long a request may wait for a PostgreSQL connection to verify its key before it is answered 503.
LOOKUP_TIMEOUT_S = 5.0


def presented_key(scope: Scope) -> str | None:
    """The key a request carries: ``X-API-Key``, else an ``Authorization: Bearer`` token, else the password of
    ``Authorization: Basic`` (the user name is ignored).

    Basic is for clients that take a server URL but no headers (Agent Lightning's ``LightningStoreClient``, the
    v0.1 client, curl ``-u``): ``http://agl:<key>@host:8000`` makes them send it.
    """
    headers = dict(scope.get("headers") or ())
    key = headers.get(b"x-api-key", b"").strip()
    authorization = headers.get(b"authorization", b"")
    scheme = authorization[:6].lower()
    if not key and scheme[:6] == b"bearer" and authorization[6:7] == b" ":
        key = authorization[7:].strip()
    elif not key and scheme[:5] == b"basic" and authorization[5:6] == b" ":
        try:
            key = base64.b64decode(authorization[6:].strip(), validate=True).partition(b":")[2].strip()
        except binascii.Error:
            key = b""
    return key.decode("latin-1") if key else None


def _refusal(status: int, detail: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {"Retry-After": "1"} if status == 503 else None
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


class ApiKeyAuth:
    """ASGI middleware: see the module's docstring. ``mode`` is ``AGL_AUTH``; ``off`` checks nothing."""

    def __init__(self, app: ASGIApp, mode: str = "keys", cache_s: float = CACHE_S) -> None:
        self.app, self.enabled, self.cache_s = app, mode == "keys", cache_s
        #: digest of a key -> (its scopes, or None when refused; when the answer expires)
        self._cache: OrderedDict[bytes, tuple[tuple[str, ...] | None, float]] = OrderedDict()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.enabled or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"].upper(), scope["path"]
        family = route_family(method, path)
        if family == "health" or (method, path) in PUBLIC_PAGES:
            await self.app(scope, receive, send)
            return
        refusal = await self._refusal_of(scope, family)
        if refusal is None:
            await self.app(scope, receive, send)
        else:
            await refusal(scope, receive, send)

    async def _refusal_of(self, scope: Scope, family: Family) -> JSONResponse | None:
        """None when the request may go on, else the answer that refuses it."""
        key = presented_key(scope)
        if key is None:
            return _refusal(401, "an API key is required: send `Authorization: Bearer <key>` or `X-API-Key: <key>`")
        try:
            scopes = await self._scopes(scope, key)
        except PoolTimeout:
            return _refusal(503, "the API key cannot be verified now (no database connection free); retry shortly")
        if scopes is None:
            return _refusal(401, "the API key is unknown or revoked")
        if not allows(scopes, family):
            return _refusal(403, f"the API key's scopes ({', '.join(scopes)}) do not include {family!r}")
        return None

    async def _scopes(self, scope: Scope, key: str) -> tuple[str, ...] | None:
        if parse_key(key) is None:
            return None  # malformed: no query spent
        digest = hashlib.sha256(key.encode()).digest()
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and cached[1] > now:
            return cached[0]
        pool: Any = scope["app"].state.pool
        async with pool.connection(timeout=LOOKUP_TIMEOUT_S) as conn:
            scopes = await verified_scopes(conn, key)
        self._cache.pop(digest, None)
        self._cache[digest] = (scopes, now + self.cache_s)
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return scopes
