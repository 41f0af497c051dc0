"""The ``?after=`` and ``wait_ms`` query parameters every read route shares, and the wait they ask for.

Call :func:`wait_after` before taking a pooled connection for the read: the wait borrows one only for its short
position checks, so slow projections cannot starve the pool.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import Query, Request

from projections.reading import wait_for_token

if TYPE_CHECKING:
    from projections.applied import AppliedListener
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


async def wait_after(request: Request, projection: Projection, after: str | None, wait_ms: int) -> None:
    """Return once ``projection`` has applied the token ``after`` (nothing to wait for without one)."""
    if after:
        state = request.app.state
        prefix: str = state.settings.topic_prefix
        timeout = min(wait_ms, MAX_WAIT_MS) / 1000
        # The broker metadata tells a token naming no existing partition at once; the listener wakes the wait on
        # the apply (an app built without one still answers, polling slowly).
        applied: AppliedListener | None = getattr(state, "applied", None)
        await wait_for_token(
            state.pool, projection, after, topic_prefix=prefix, timeout_s=timeout, kafka=state.kafka, applied=applied
        )
