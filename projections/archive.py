"""The event archive: every record of every event topic, kept in PostgreSQL.

For SQL analytics (``SELECT type, count(*) FROM archive_g1.events GROUP BY type``) and for replay beyond the
broker's retention: with the memory-only Tansu broker, ``agl up`` re-publishes the archive into a reset log, in
partition and offset order, so the offsets match again (see ``agl.stack.restore``).

The projection is raw: it stores records as they are, including those no projection can decode, because a
restored log must keep every offset. No record's bytes may make a row fail (a parked record would be a gap in the
archive, and a gap makes a restore inexact): ``value`` and the headers are kept exactly, while ``payload``, ``type``
and ``version``, which exist for queries, hold only what their column types accept (else NULL or a sanitised copy).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

import orjson

from projections.base import BACKGROUND_LINGER_MS, Envelope, Projection
from projections.migrations import load_package_migrations
from projections.safe_text import encode_headers, int4_or_none, jsonb_payload, safe_text
from schemas.topics import META, TOPICS

if TYPE_CHECKING:
    from psycopg import AsyncConnection

_COLUMNS = 'topic, partition, "offset", event_id, type, version, key, timestamp, payload, value, headers'


def _header(headers: dict[str, bytes], name: str) -> str | None:
    raw = headers.get(name)
    return None if raw is None else safe_text(raw.decode(errors="replace"))


#: The range of ``timestamptz`` that Python's datetime can also hold; a foreign producer may set any int64.
_MIN_MS = int(datetime(1, 1, 2, tzinfo=UTC).timestamp() * 1000)
_MAX_MS = int(datetime(9999, 12, 31, tzinfo=UTC).timestamp() * 1000)


def _row(e: Envelope) -> tuple[Any, ...]:
    headers = dict(e.headers)
    event_id: UUID | None
    try:
        event_id = UUID(_header(headers, "ce_id") or "")
    except ValueError:
        event_id = None
    encoded = orjson.dumps(encode_headers(e.headers)).decode()
    # The broker's recorded time, not a clock read (clamped: the archive must take the record whatever it says).
    timestamp = datetime.fromtimestamp(min(max(e.timestamp_ms, _MIN_MS), _MAX_MS) / 1000, UTC)
    return (e.topic, e.partition, e.offset, event_id, _header(headers, "ce_type"),
            int4_or_none(_header(headers, "event_version")), e.key, timestamp, jsonb_payload(e.value), e.value,
            encoded)  # fmt: skip


async def apply(envelopes: Sequence[Envelope], conn: AsyncConnection[Any]) -> None:
    async with conn.cursor() as cur, cur.copy(f"COPY events ({_COLUMNS}) FROM STDIN") as copy:
        for envelope in envelopes:
            await copy.write_row(_row(envelope))


PROJECTION = Projection(
    name="archive",
    version=1,
    topics=tuple(t for t in TOPICS if t is not META),
    migrations=tuple(load_package_migrations("projections", "sql/archive")),
    apply=apply,
    tables=("events",),
    raw=True,
    dedupe=False,
    linger_ms=BACKGROUND_LINGER_MS,
    description="every record of every event topic (SQL analytics, replay beyond retention, Tansu restore)",
)
