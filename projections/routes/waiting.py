"""The ``?after=`` and ``wait_ms`` query parameters every read route shares, and the wait they ask for."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Query, Request

from projections.reading import wait_for_token

if TYPE_CHECKING:
    from projections.base import Projection

#: How long a read may wait for ``?after=`` at most, whatever ``wait_ms`` asks.
MAX_WAIT_MS = 30_000
#: A token names one position per partition: a few thousand characters cover any deployment.
MAX_TOKEN_LENGTH = 10_000

AfterQuery = Annotated[
    str | None,
    Query(max_length=MAX_TOKEN_LENGTH, description="a position token from the command API: wait until applied"),
]
WaitQuery = Annotated[int, Query(ge=0, le=MAX_WAIT_MS, description="how long to wait for ?after=, in ms")]


async def wait_after(request: Request, conn: Any, projection: Projection, after: str | None, wait_ms: int) -> None:
    """Return once ``projection`` has applied the token ``after`` (nothing to wait for without one)."""
    if after:
        prefix: str = request.app.state.settings.topic_prefix
        timeout = min(wait_ms, MAX_WAIT_MS) / 1000
        kafka = request.app.state.kafka  # its metadata tells a token naming no existing partition at once
        await wait_for_token(conn, projection, after, topic_prefix=prefix, timeout_s=timeout, kafka=kafka)
