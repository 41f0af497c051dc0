"""A bound on the request line: a path or query string longer than the limit is answered 414.

Every route reads its parameters from the query string; without a bound, a single request could make the API parse
megabytes of parameters (the body has its own limit, ``producers.http.BodySizeLimit``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.responses import JSONResponse

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send


class UrlLimit:
    """ASGI middleware: 414 when the path or the query string exceeds ``max_bytes`` (each)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope.get("raw_path") or scope["path"].encode()
            if len(path) > self.max_bytes or len(scope.get("query_string", b"")) > self.max_bytes:
                detail = f"the path or the query string exceeds {self.max_bytes} bytes"
                await JSONResponse({"detail": detail}, status_code=414)(scope, receive, send)
                return
        await self.app(scope, receive, send)
