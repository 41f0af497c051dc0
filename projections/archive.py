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

import struct
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

import orjson

from projections.base import BACKGROUND_LINGER_MS, Envelope, Projection
from projections.copy_binary import BINARY_HEADER, BINARY_TRAILER, binary_row, binary_text
from projections.migrations import load_package_migrations
from projections.safe_text import encode_headers, int4_or_none, jsonb_accepts, safe_text
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
#: PostgreSQL's binary timestamps count microseconds from 2000-01-01 UTC.
_PG_EPOCH_US = int(datetime(2000, 1, 1, tzinfo=UTC).timestamp()) * 1_000_000
#: A binary jsonb value is this version byte, then the JSON text.
_JSONB_V1 = b"\x01"
_INT4, _INT8 = struct.Struct(">i"), struct.Struct(">q")


def _row(e: Envelope) -> bytes:
    """The record as a binary COPY row: the value goes in as its bytes, neither escaped here nor parsed there
    (a text COPY hex-escaped every value byte in Python, the larger part of this projection's work)."""
    headers = dict(e.headers)
    event_id: bytes | None
    try:
        event_id = UUID(_header(headers, "ce_id") or "").bytes
    except ValueError:
        event_id = None
    version = int4_or_none(_header(headers, "event_version"))
    # The broker's recorded time, not a clock read (clamped: the archive must take the record whatever it says).
    micros = min(max(e.timestamp_ms, _MIN_MS), _MAX_MS) * 1000 - _PG_EPOCH_US
    # The payload column holds the value's own bytes, as jsonb's binary input (a version byte, then the text).
    payload = _JSONB_V1 + e.value if e.value is not None and jsonb_accepts(e.value) else None
    return binary_row(
        e.topic.encode(),
        _INT4.pack(e.partition),
        _INT8.pack(e.offset),
        event_id,
        binary_text(_header(headers, "ce_type")),
        None if version is None else _INT4.pack(version),
        e.key,
        _INT8.pack(micros),
        payload,
        e.value,
        _JSONB_V1 + orjson.dumps(encode_headers(e.headers)),
    )


async def apply(envelopes: Sequence[Envelope], conn: AsyncConnection[Any]) -> None:
    rows = [_row(envelope) for envelope in envelopes]
    statement = f"COPY events ({_COLUMNS}) FROM STDIN WITH (FORMAT binary)"
    async with conn.cursor() as cur, cur.copy(statement) as copy:
        await copy.write(b"".join((BINARY_HEADER, *rows, BINARY_TRAILER)))


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
