"""Rows of the triplet projection as PostgreSQL COPY text, built in bulk with as little Python per value as can be.

A rebuild writes a span copy and a triplet per LLM call for a million spans, and Python is what limits it on two
cores: a psycopg dumper call per value costs more than the whole row built here. JSON comes from orjson (C), an
integer array is the orjson list with braces, and text is escaped only when it holds one of COPY's special
characters. PostgreSQL refuses NUL in text and jsonb, so it is replaced (as ``projections.safe_text`` does) rather
than let one hostile span stop the projection.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson

from projections.safe_text import safe_text

if TYPE_CHECKING:
    from projections.triplet_adapter import Triplet

NULL = b"\\N"
_INT4_MIN, _INT4_MAX = -(2**31), 2**31 - 1
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def text(value: str | None) -> bytes:
    """A text column's COPY field."""
    if value is None:
        return NULL
    value = safe_text(value)
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        value = value.translate(_ESCAPES)
    return value.encode()


def jsonb(value: Any) -> bytes:
    """A jsonb column's COPY field; ``\\u0000`` (which jsonb refuses) becomes the replacement character."""
    if value is None:
        return NULL
    try:
        data = orjson.dumps(value, default=str)
    except TypeError:  # an integer beyond 64 bits (JSON allows it, orjson does not): kept as its digits
        data = orjson.dumps(_wide_ints_as_text(value), default=str)
    if b"\\u0000" in data:
        data = data.replace(b"\\u0000", b"\\ufffd")
    return data.replace(b"\\", b"\\\\")


def _wide_ints_as_text(value: Any) -> Any:
    if isinstance(value, int) and not -(2**63) <= value < 2**64:
        return str(value)
    if isinstance(value, dict):
        return {k: _wide_ints_as_text(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_wide_ints_as_text(v) for v in value]
    return value


def int_array(values: tuple[int, ...]) -> bytes:
    """An ``integer[]`` field; ids an int4 cannot hold make the array empty (an invalid value falls through)."""
    if not values:
        return b"{}"
    if min(values) < _INT4_MIN or max(values) > _INT4_MAX:
        return b"{}"
    return b"{" + orjson.dumps(values)[1:-1] + b"}"


def timestamp(value: datetime | None) -> bytes:
    return NULL if value is None else value.isoformat().encode()


def number(value: float | None) -> bytes:
    return NULL if value is None else repr(float(value)).encode()


#: The triplets table's columns, in the order ``triplet_line`` writes them.
TRIPLET_COLUMNS = (
    "rollout_id", "attempt_id", "idx", "span_id", "response_id", "agent_name", "model", "mode", "resources_id",
    "start_time", "end_time", "reward", "reward_source", "reward_error", "reward_dimensions", "prompt_token_ids",
    "response_token_ids", "logprobs", "prompt", "response", "request", "response_meta", "image_urls",
)  # fmt: skip


def triplet_line(rollout: bytes, attempt: bytes, mode: bytes, resources_id: bytes, t: Triplet) -> bytes:
    """One triplet as a COPY text line (``rollout``, ``attempt``, ``mode``, ``resources_id`` already fields)."""
    return b"\t".join(
        (
            rollout,
            attempt,
            str(t.index).encode(),
            text(t.span_id),
            text(t.response_id),
            text(t.agent_name),
            text(t.model),
            mode,
            resources_id,
            timestamp(t.start_time),
            timestamp(t.end_time),
            number(t.reward),
            text(t.reward_source),
            text(t.reward_error),
            jsonb(t.reward_dimensions),
            int_array(t.prompt_token_ids),
            int_array(t.response_token_ids),
            jsonb(t.logprobs),
            jsonb(t.prompt),
            jsonb(t.response),
            jsonb(t.request),
            jsonb(t.response_meta),
            jsonb(t.image_urls),
        )
    )
