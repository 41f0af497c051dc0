"""The event archive: every record of every event topic, kept in PostgreSQL.

For SQL analytics (``SELECT type, count(*) FROM archive_g1.events GROUP BY type``) and for replay beyond the
broker's retention: with the memory-only Tansu broker, ``agl up`` re-publishes the archive into a reset log, in
partition and offset order, so the offsets match again (see ``consumers.restore``).

The projection is raw: it stores records as they are, including those no projection can decode, because a
restored log must keep every offset.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

import orjson

from projections.base import Envelope, Projection
from projections.migrations import load_package_migrations
from schemas.topics import META, TOPICS

if TYPE_CHECKING:
    from psycopg import AsyncConnection

_COLUMNS = 'topic, partition, "offset", event_id, type, version, key, timestamp, payload, value, headers'


def _header(headers: dict[str, bytes], name: str) -> str | None:
    raw = headers.get(name)
    return None if raw is None else raw.decode(errors="replace")


def _row(e: Envelope) -> tuple[Any, ...]:
    headers = dict(e.headers)
    event_id: UUID | None
    try:
        event_id = UUID(_header(headers, "ce_id") or "")
    except ValueError:
        event_id = None
    version = _header(headers, "event_version")
    payload: str | None = None
    if e.value is not None:
        try:
            orjson.loads(e.value)
            payload = e.value.decode()
        except (orjson.JSONDecodeError, UnicodeDecodeError):
            payload = None
    encoded = orjson.dumps([[n, base64.b64encode(v or b"").decode()] for n, v in e.headers]).decode()
    timestamp = datetime.fromtimestamp(e.timestamp_ms / 1000, UTC)  # the broker's recorded time, not a clock read
    number = int(version) if version and version.isdigit() else None
    return (e.topic, e.partition, e.offset, event_id, _header(headers, "ce_type"), number, e.key, timestamp,
            payload, e.value, encoded)  # fmt: skip


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
    description="every record of every event topic (SQL analytics, replay beyond retention, Tansu restore)",
)
