"""What every v0.3 and v0.1 route takes from the app: the pool, the publisher, the outbox relay, the envelope."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from psycopg_pool import AsyncConnectionPool

    from producers.outbox import OutboxRelay
    from producers.publisher import EventPublisher

#: The CloudEvents source of the events these routes publish: the same events as our own API's, from here.
SOURCE = "/agl/api/agl-compat"
#: What any of these routes may answer besides its success (404 and 409 are declared where they occur).
RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "v0.3's own rules: an explicit null, bad pagination, a change no event records"},
    413: {"description": "the body is larger than AGL_API_MAX_BODY_BYTES"},
    422: {"description": "a field our events' bounds refuse (NUL, an id too long, ...)"},
    503: {"description": "busy or a read model not started yet; retry (Retry-After)"},
}
#: The worker a v0.3 or v0.1 client claims as when it names none.
ANONYMOUS_WORKER = "agl-compat-client"


@dataclass(frozen=True)
class Services:
    pool: AsyncConnectionPool[Any]
    publisher: EventPublisher
    relay: OutboxRelay
    envelope: dict[str, Any]


def services(request: Request) -> Services:
    state = request.app.state
    envelope = {"source": SOURCE, "correlation_id": request.headers.get("X-Correlation-ID")}
    return Services(state.pool, state.publisher, state.relay, envelope)


def _invalid_body(msg: str) -> RequestValidationError:
    # Answered as every 422 is (InvalidAnswer: the failing field and one line), not with a bare string detail.
    return RequestValidationError([{"type": "model_type", "loc": ("body",), "msg": msg}])


async def json_object(request: Request, *, allow_empty: bool = False) -> dict[str, Any]:
    """The body as a JSON object, keys as sent: v0.3 tells an omitted field (unchanged) from an explicit null."""
    raw = await request.body()
    if not raw.strip():
        if allow_empty:
            return {}
        raise _invalid_body("the body must be a JSON object")
    try:
        body = await request.json()
    except ValueError as e:
        raise _invalid_body(f"the body is not JSON: {e}") from e
    if body is None and allow_empty:
        return {}
    if not isinstance(body, dict):
        raise _invalid_body("the body must be a JSON object")
    return body


@contextlib.contextmanager
def as_422() -> Iterator[None]:
    """Their model accepted the request but ours (the event's bounds) does not: 422 naming the field, as our own
    routes answer, never a 500."""
    try:
        yield
    except ValidationError as e:
        raise RequestValidationError(e.errors()) from e
    except (ValueError, OverflowError, OSError, TypeError) as e:
        # A value their model lets through that no datetime can hold (a span time in the year 10^9, say).
        raise RequestValidationError([{"type": "value_error", "loc": ("body",), "msg": str(e), "input": None}]) from e


def reject_nulls(body: dict[str, Any], fields: tuple[str, ...]) -> None:
    """v0.3's rule: these fields may be omitted (unchanged) but never null."""
    for field in fields:
        if field in body and body[field] is None:
            raise HTTPException(400, f"{field} is invalid; it cannot be a null value.")
