"""``agl triplets export``: every matching triplet as JSON Lines or Parquet, streamed to a file or stdout.

Reads the projection's active generation straight from PostgreSQL with a server-side cursor, a page at a time,
through the same encoder as ``GET /v1/triplets/export``: memory stays at one page whatever the export's size, and
the file reads back equal to the API's rows. A file is written beside its destination and renamed into place when
complete, so an interrupted export never leaves a truncated file under the asked name.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from core.errors import ConfigError

if TYPE_CHECKING:
    from projections.triplets_export import ExportFormat
    from projections.triplets_queries import TripletFilter

WHERE_KEYS = (
    "rollout_id", "attempt_id", "mode", "resources_id", "reward_min", "reward_max", "has_reward", "since", "until",
)  # fmt: skip


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser("triplets", help="export training triplets")
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    export = sub.add_parser(
        "export", help="stream every matching triplet as JSON Lines or Parquet (constant memory, with progress)"
    )
    export.add_argument("--format", choices=("jsonl", "parquet"), default="jsonl")
    export.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"a filter (repeatable; all must match); keys: {', '.join(WHERE_KEYS)}; times are ISO 8601 with a zone",
    )
    export.add_argument("--output", "-o", type=Path, help="the file to write (default: stdout)")
    export.add_argument("--projection", default="triplets", help="a triplet projection other than the built-in one")
    export.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")
    export.set_defaults(func=cmd_export)


def parse_where(pairs: list[str]) -> TripletFilter:
    """``KEY=VALUE`` filters as a :class:`TripletFilter`, typed and checked like the API's query parameters."""
    from pydantic import AwareDatetime, BaseModel, ConfigDict, ValidationError

    from projections.triplets_queries import TripletFilter
    from schemas import RolloutMode
    from schemas.bounds import Id

    class Where(BaseModel):
        model_config = ConfigDict(extra="forbid")
        rollout_id: Id | None = None
        attempt_id: Id | None = None
        mode: RolloutMode | None = None
        resources_id: Id | None = None
        reward_min: float | None = None
        reward_max: float | None = None
        has_reward: bool | None = None
        since: AwareDatetime | None = None
        until: AwareDatetime | None = None

    values: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in WHERE_KEYS:
            raise ConfigError(f"--where {pair!r}: expected KEY=VALUE with KEY one of {', '.join(WHERE_KEYS)}")
        values[key] = value
    try:
        return TripletFilter(**Where.model_validate(values).model_dump())
    except ValidationError as e:
        first = e.errors()[0]
        raise ConfigError(f"--where {first['loc'][0]}: {first['msg']}") from None


class _Progress:
    """Rows and bytes written, on one stderr line redrawn at most ten times a second (a bar when the total is known)."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.enabled = total, enabled
        self.rows = self.bytes = 0
        self.started = self.drawn = time.monotonic()

    def add(self, rows: int, size: int) -> None:
        self.rows += rows
        self.bytes += size
        if self.enabled and time.monotonic() - self.drawn >= 0.1:
            self.draw()

    def draw(self, end: str = "") -> None:
        self.drawn = time.monotonic()
        rate = self.rows / max(self.drawn - self.started, 1e-6)
        done = min(self.rows / self.total, 1.0) if self.total else 1.0
        bar = "#" * int(done * 30)
        line = f"\r[{bar:<30}] {done:4.0%} {self.rows}/{self.total} triplets {self.bytes / 1e6:.1f} MB {rate:,.0f}/s"
        print(line, end=end, file=sys.stderr, flush=True)


async def export(
    database_url: str,
    where: TripletFilter,
    fmt: ExportFormat,
    out: BinaryIO,
    *,
    projection_name: str = "triplets",
    progress: bool = False,
) -> int:
    """Write every match to ``out``; return the number of triplets written."""
    import psycopg

    from projections.reading import reading
    from projections.triplets import resolve
    from projections.triplets_export import encode_pages
    from projections.triplets_queries import count_triplets, stream_triplets

    projection = resolve(projection_name)
    conn = await psycopg.AsyncConnection.connect(database_url, autocommit=True)
    async with conn, reading(conn, projection):
        meter = _Progress(await count_triplets(conn, where), progress)
        async for chunk, rows in encode_pages(stream_triplets(conn, where), fmt):
            out.write(chunk)
            meter.add(rows, len(chunk))
    if progress:
        meter.draw(end="\n")
    return meter.rows


def cmd_export(args: argparse.Namespace) -> int:
    from agl.config import Settings
    from agl.stack.state import with_running_stack

    where = parse_where(args.where)
    settings = with_running_stack(Settings(), need=("database_url",))
    assert settings.database_url is not None
    progress = not args.quiet and sys.stderr.isatty()
    if args.output is None:
        if args.format == "parquet" and sys.stdout.isatty():
            raise ConfigError("Parquet is binary: give --output FILE or redirect stdout")
        count = asyncio.run(
            export(settings.database_url, where, args.format, sys.stdout.buffer, projection_name=args.projection,
                   progress=progress)
        )  # fmt: skip
        sys.stdout.flush()
    else:
        partial = args.output.with_name(args.output.name + ".partial")
        try:
            with partial.open("wb") as out:
                count = asyncio.run(
                    export(settings.database_url, where, args.format, out, projection_name=args.projection,
                           progress=progress)
                )  # fmt: skip
            partial.replace(args.output)
        finally:
            partial.unlink(missing_ok=True)
    if not args.quiet:
        print(f"{count} triplets exported", file=sys.stderr)
    return 0
