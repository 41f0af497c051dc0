"""Reading triplets: filters, keyset pages, and a constant-memory stream of every match (for exports).

Rows come in one total order, ``(start_time, rollout_id, attempt_id, idx)`` (the call's start, then its identity),
which the ``triplets_order`` index walks: a page is an index range scan from the cursor, however deep, and a
triplet recomputed between two pages keeps its place. Every row is turned into the same JSON-able dict for the
API, JSONL and Parquet (timestamps in UTC), so each export reads back equal to the API's rows.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
from psycopg.types.json import set_json_loads

from projections.errors import ProjectionError

if TYPE_CHECKING:
    from psycopg import AsyncConnection

#: The columns read, as named in a row (``idx`` is ``index`` outside the table).
COLUMNS = (
    "rollout_id", "attempt_id", "idx", "span_id", "response_id", "agent_name", "model", "mode", "resources_id",
    "start_time", "end_time", "reward", "reward_source", "reward_error", "reward_dimensions", "prompt_token_ids",
    "response_token_ids", "logprobs", "prompt", "response", "request", "response_meta", "image_urls",
)  # fmt: skip
FIELDS = tuple("index" if c == "idx" else c for c in COLUMNS)
_ORDER = "start_time, rollout_id, attempt_id, idx"
_TIMES = (FIELDS.index("start_time"), FIELDS.index("end_time"))
_INT4_MAX = 2**31 - 1
_FORGED = "the cursor is not one this API handed out; start again without it"


class InvalidCursor(ProjectionError):
    """A page cursor that this API did not hand out (a 400)."""

    http_status = 400
    exit_code = 2


@dataclass(frozen=True)
class TripletFilter:
    """What a triplet must match; ``None`` = any. ``since`` is inclusive, ``until`` exclusive (the call's start)."""

    rollout_id: str | None = None
    attempt_id: str | None = None
    mode: str | None = None
    resources_id: str | None = None
    reward_min: float | None = None
    reward_max: float | None = None
    has_reward: bool | None = None
    since: datetime | None = None
    until: datetime | None = None

    def where(self) -> tuple[str, dict[str, Any]]:
        """The SQL condition (constant fragments joined, values as named parameters)."""
        parts: list[str] = []
        params: dict[str, Any] = {}
        for column in ("rollout_id", "attempt_id", "mode", "resources_id"):
            value = getattr(self, column)
            if value is not None:
                parts.append(f"{column} = %({column})s")
                params[column] = value
        if self.reward_min is not None:
            parts.append("reward >= %(reward_min)s")
            params["reward_min"] = self.reward_min
        if self.reward_max is not None:
            parts.append("reward <= %(reward_max)s")
            params["reward_max"] = self.reward_max
        if self.has_reward is not None:
            parts.append("reward IS NOT NULL" if self.has_reward else "reward IS NULL")
        if self.since is not None:
            parts.append("start_time >= %(since)s")
            params["since"] = self.since
        if self.until is not None:
            parts.append("start_time < %(until)s")
            params["until"] = self.until
        return (" AND ".join(parts) or "TRUE"), params


def encode_cursor(row: dict[str, Any]) -> str:
    """The opaque cursor after ``row``: its place in the order, as URL-safe base64 of JSON."""
    key = [row["start_time"], row["rollout_id"], row["attempt_id"], row["index"]]
    return base64.urlsafe_b64encode(orjson.dumps(key)).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str, str, int]:
    """The place a cursor names; anything else (also a forged cursor PostgreSQL would refuse) is InvalidCursor."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        start, rollout_id, attempt_id, index = orjson.loads(raw)
        at = datetime.fromisoformat(start)
    except (binascii.Error, orjson.JSONDecodeError, ValueError, TypeError):
        raise InvalidCursor(_FORGED) from None
    texts_ok = isinstance(rollout_id, str) and isinstance(attempt_id, str) and "\x00" not in rollout_id + attempt_id
    if not texts_ok or type(index) is not int or not 0 <= index <= _INT4_MAX or at.tzinfo is None:
        raise InvalidCursor(_FORGED)
    return at, rollout_id, attempt_id, index


def _select(where: str, after: bool) -> str:
    keyset = f" AND ({_ORDER}) > (%(c_time)s, %(c_rollout)s, %(c_attempt)s, %(c_index)s)" if after else ""
    return f"SELECT {', '.join(COLUMNS)} FROM triplets WHERE {where}{keyset} ORDER BY {_ORDER}"  # noqa: S608


def as_row(record: tuple[Any, ...]) -> dict[str, Any]:
    """A fetched record as the JSON-able dict every reader gets (timestamps in UTC, ISO 8601)."""
    values = list(record)
    for i in _TIMES:
        if values[i] is not None:
            values[i] = values[i].astimezone(UTC).isoformat()
    return dict(zip(FIELDS, values, strict=True))


async def list_triplets(
    conn: AsyncConnection[Any], where: TripletFilter, *, limit: int, cursor: str | None = None
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of matches in order, and the cursor of the next page (``None``: this was the last)."""
    condition, params = where.where()
    if cursor is not None:
        params.update(zip(("c_time", "c_rollout", "c_attempt", "c_index"), decode_cursor(cursor), strict=True))
    params["limit"] = limit + 1  # one more tells whether a next page exists
    async with conn.cursor() as cur:
        set_json_loads(orjson.loads, cur)
        await cur.execute(_select(condition, cursor is not None) + " LIMIT %(limit)s", params)
        rows = [as_row(r) for r in await cur.fetchall()]
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, encode_cursor(rows[-1]) if more else None


async def count_triplets(conn: AsyncConnection[Any], where: TripletFilter) -> int:
    condition, params = where.where()
    cur = await conn.execute(f"SELECT count(*) FROM triplets WHERE {condition}", params)  # noqa: S608
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def stream_triplets(
    conn: AsyncConnection[Any], where: TripletFilter, *, page_size: int = 2000
) -> AsyncIterator[list[dict[str, Any]]]:
    """Every match in order, a page at a time, from a server-side cursor (call inside a transaction)."""
    condition, params = where.where()
    async with conn.cursor(name="triplet_export") as cur:
        set_json_loads(orjson.loads, cur)
        await cur.execute(_select(condition, False), params)
        while records := await cur.fetchmany(page_size):
            yield [as_row(r) for r in records]


async def rollout_spans(conn: AsyncConnection[Any], rollout_id: str) -> dict[str, list[bytes]]:
    """The stored spans of a rollout as JSON bodies, by attempt (for trace-to-messages)."""
    cur = await conn.execute(
        "SELECT attempt_id, body FROM triplet_spans WHERE rollout_id = %s ORDER BY attempt_id, sequence_id",
        (rollout_id,),
    )
    out: dict[str, list[bytes]] = {}
    for attempt_id, body in await cur.fetchall():
        out.setdefault(attempt_id, []).append(body)
    return out
