"""Triplet exports as byte chunks: JSON Lines, or Parquet written a row group per page.

Both the HTTP download and ``agl triplets export`` feed pages of rows (from ``stream_triplets``) through one
encoder and pass each chunk on as soon as it exists, so memory stays at one page whatever the export's size.

Parquet columns are typed where the shape is fixed (token ids as ``list<int32>``, reward dimensions as
``map<string, double>``, times as UTC microseconds) and JSON text where it is the user's (prompt, response,
logprobs, request and response metadata), since one Arrow type cannot hold every message shape.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, Literal

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

ExportFormat = Literal["jsonl", "parquet"]
MEDIA_TYPES: dict[ExportFormat, str] = {"jsonl": "application/x-ndjson", "parquet": "application/vnd.apache.parquet"}
#: Columns stored in Parquet as JSON text (their shape is whatever the agent sent).
JSON_COLUMNS = ("logprobs", "prompt", "response", "request", "response_meta")

_TIME = pa.timestamp("us", tz="UTC")
SCHEMA = pa.schema(
    [  # type: ignore[arg-type]  # the stubs want DataType values; map_ and list_ are typed as objects
        ("rollout_id", pa.string()),
        ("attempt_id", pa.string()),
        ("index", pa.int32()),
        ("span_id", pa.string()),
        ("response_id", pa.string()),
        ("agent_name", pa.string()),
        ("model", pa.string()),
        ("mode", pa.string()),
        ("resources_id", pa.string()),
        ("start_time", _TIME),
        ("end_time", _TIME),
        ("reward", pa.float64()),
        ("reward_source", pa.string()),
        ("reward_error", pa.string()),
        ("reward_dimensions", pa.map_(pa.string(), pa.float64())),
        ("prompt_token_ids", pa.list_(pa.int32())),
        ("response_token_ids", pa.list_(pa.int32())),
        ("logprobs", pa.string()),
        ("prompt", pa.string()),
        ("response", pa.string()),
        ("request", pa.string()),
        ("response_meta", pa.string()),
        ("image_urls", pa.list_(pa.string())),
    ]
)


def jsonl_chunk(rows: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(row) + b"\n" for row in rows)


def _json_text(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def arrow_table(rows: list[dict[str, Any]]) -> pa.Table:
    """One page of rows as an Arrow table of :data:`SCHEMA`."""
    columns: dict[str, list[Any]] = {name: [] for name in SCHEMA.names}
    for row in rows:
        for name, values in columns.items():
            value = row[name]
            if name in JSON_COLUMNS:
                value = _json_text(value)
            elif name in ("start_time", "end_time") and value is not None:
                value = datetime.fromisoformat(value)
            elif name == "reward_dimensions":
                value = list(value.items())
            values.append(value)
    return pa.table(columns, schema=SCHEMA)


class _Chunks:
    """A write-only file for ParquetWriter that hands what it was given to the caller chunk by chunk."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.position = 0
        self.closed = False

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self.parts.append(chunk)
        self.position += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self.position

    def flush(self) -> None:
        return

    def close(self) -> None:
        self.closed = True

    def take(self) -> bytes:
        out = b"".join(self.parts)
        self.parts.clear()
        return out


async def encode_pages(
    pages: AsyncIterator[list[dict[str, Any]]], fmt: ExportFormat
) -> AsyncIterator[tuple[bytes, int]]:
    """Each page encoded as it comes: ``(bytes, rows in them)``; Parquet ends with its footer (0 rows)."""
    if fmt == "jsonl":
        async for rows in pages:
            yield jsonl_chunk(rows), len(rows)
        return
    sink = _Chunks()
    writer = pq.ParquetWriter(sink, SCHEMA, compression="zstd")  # type: ignore[arg-type]  # any writable file
    try:
        async for rows in pages:
            writer.write_table(arrow_table(rows))
            yield sink.take(), len(rows)
    finally:
        writer.close()
    yield sink.take(), 0
