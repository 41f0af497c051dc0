"""``agl projections attach``'s progress: position, watermark, events/s and ETA of a projection catching up."""

from __future__ import annotations

import asyncio
import sys
import time
from collections import deque
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from psycopg import AsyncConnection


async def follow_catch_up(conn: AsyncConnection[Any], bootstrap: str, name: str, start_timeout_s: float) -> int:
    """Print position, watermark, events/s and ETA about every second until the worker reaches the watermarks
    seen when it was first measured (records written since do not keep it from being caught up)."""
    from consumers.watermarks import fetch_watermarks

    started = time.monotonic()
    targets: dict[tuple[str, int], int] | None = None
    samples: deque[tuple[float, int]] = deque(maxlen=6)
    while True:
        positions = await stored_positions(conn, name)
        if not positions:
            if time.monotonic() - started > start_timeout_s:
                print(
                    f"no worker started {name} within {start_timeout_s:.0f}s: does `agl up` run on "
                    "this database? It stays attached; the next `agl up` runs it",
                    file=sys.stderr,
                )
                return 1
            await asyncio.sleep(0.5)
            continue
        marks = await fetch_watermarks(bootstrap, positions)
        if targets is None:
            targets = {tp: mark.high_watermark for tp, mark in marks.items()}
        left = sum(
            0 if marks[tp].lag(offset) == 0 else max(0, targets.get(tp, 0) - offset) for tp, offset in positions.items()
        )
        position = sum(positions.values())
        samples.append((time.monotonic(), position))
        line = catch_up_line(name, position, position + left, samples)
        if left == 0:
            print(f"{line}\n{name} caught up in {time.monotonic() - started:.1f}s", flush=True)
            return 0
        print(line, flush=True)
        await asyncio.sleep(1.0)


async def stored_positions(conn: AsyncConnection[Any], name: str) -> dict[tuple[str, int], int]:
    """The active generation's positions; empty until a worker has started and been assigned its partitions."""
    from projections.tracking import active_generation, load_positions

    gen = await active_generation(conn, name)
    return {} if gen is None else await load_positions(conn, gen.schema)


def catch_up_line(name: str, position: int, watermark: int, samples: deque[tuple[float, int]]) -> str:
    (t0, p0), (t1, p1) = samples[0], samples[-1]
    rate = (p1 - p0) / (t1 - t0) if t1 > t0 else 0.0
    eta = f"{(watermark - position) / rate:.0f}s" if rate > 0 else "?"
    done = position / watermark if watermark else 1.0
    return f"{name}: position {position} / watermark {watermark} ({done:.1%}), {rate:,.0f} events/s, ETA {eta}"
