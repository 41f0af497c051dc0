"""Liveness of a projection worker (infra/k8s), which serves no HTTP: ``python probe.py projection NAME``.

Exits 1 when NAME's active generation is stalled (it has lag and has stored no position for ``--stall-after``
seconds), so Kubernetes restarts the worker, which resumes from its stored positions. Exits 0 otherwise, and also
when PostgreSQL or the broker cannot be read: a restart cannot fix a dependency, and the API's ``/readyz`` reports
those.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import psycopg

from agl.config import Settings
from consumers.status import gather_status

#: Longer than the status's own 30 s: a worker in a long batch (a rebuild-sized backlog) is not restarted.
DEFAULT_STALL_AFTER_S = 120.0


async def stalled_generations(settings: Settings, name: str, stall_after_s: float) -> list[int]:
    assert settings.database_url is not None and settings.kafka_bootstrap is not None
    async with await psycopg.AsyncConnection.connect(settings.database_url, autocommit=True, connect_timeout=5) as conn:
        statuses = await gather_status(conn, settings.kafka_bootstrap, stall_after_s=stall_after_s)
    return [s.generation for s in statuses if s.name == name and s.state == "active" and s.stalled]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="probe", description=__doc__)
    sub = parser.add_subparsers(dest="kind", required=True)
    projection = sub.add_parser("projection", help="fail when the projection's active generation is stalled")
    projection.add_argument("name")
    projection.add_argument("--stall-after", type=float, default=DEFAULT_STALL_AFTER_S, metavar="S")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings()
    if not settings.database_url or not settings.kafka_bootstrap:
        sys.stderr.write("probe: AGL_DATABASE_URL and AGL_KAFKA_BOOTSTRAP must both be set\n")
        return 2
    try:
        stalled = asyncio.run(stalled_generations(settings, args.name, args.stall_after))
    except (OSError, psycopg.Error, TimeoutError) as e:
        sys.stderr.write(f"probe: cannot read the status ({e}); not the worker's fault\n")
        return 0
    if stalled:
        sys.stderr.write(f"probe: {args.name} generation {stalled[0]} is stalled for over {args.stall_after:.0f}s\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
