"""``agl projections list|run|attach|status|rebuild|rollback``: the projection engine from the command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agl.config import Settings
    from consumers.rebuild import Progress, RebuildResult
    from consumers.status import ProjectionStatus


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser("projections", help="run, attach, inspect and rebuild")
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    sub.add_parser("list", help="the projections this installation knows").set_defaults(func=cmd_list)
    run = sub.add_parser("run", help="keep a projection up to date (SIGTERM drains the batch and exits)")
    run.add_argument("name", help="a projection name, or module:object")
    run.add_argument("--batch-size", type=int, default=2000, help="records per transaction")
    run.add_argument(
        "--no-group", action="store_true", help="take every partition without a consumer group (one instance only)"
    )
    run.set_defaults(func=cmd_run)
    attach = sub.add_parser("attach", help="start a new projection (module:object); it catches up from offset 0")
    attach.add_argument("reference", help="module:object naming a Projection")
    attach.set_defaults(func=cmd_run, batch_size=2000, no_group=False)
    status = sub.add_parser("status", help="positions, high watermarks, lag, rate, dead letters, stalls")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=cmd_status)
    rebuild = sub.add_parser("rebuild", help="build the next generation from offset 0, then switch readers")
    rebuild.add_argument("name")
    rebuild.add_argument("--cancel", action="store_true", help="drop the generation being built")
    rebuild.add_argument(
        "--keep-old", action="store_true", help="keep the replaced generation (for `agl projections rollback`)"
    )
    rebuild.add_argument("--batch-size", type=int, default=5000)
    rebuild.set_defaults(func=cmd_rebuild)
    rollback = sub.add_parser(
        "rollback", help="switch readers back to the generation the last rebuild replaced (kept with --keep-old)"
    )
    rollback.add_argument("name")
    rollback.set_defaults(func=cmd_rollback)


def _settings() -> Settings:
    from agl.config import Settings
    from agl.stack.state import with_running_stack

    return with_running_stack(Settings())


def cmd_list(_: argparse.Namespace) -> int:
    from projections.registry import all_projections

    for name, projection in sorted(all_projections().items()):
        topics = ", ".join(t.name for t in projection.topics)
        print(f"{name:<16} v{projection.version}  {topics}\n{'':<16} {projection.description}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from consumers.runner import run_projection
    from projections.registry import get

    projection = get(getattr(args, "reference", None) or args.name)
    asyncio.run(run_projection(projection, _settings(), batch_size=args.batch_size, use_group=not args.no_group))
    return 0


# -- status -------------------------------------------------------------------------------------------------
def cmd_status(args: argparse.Namespace) -> int:
    statuses = asyncio.run(_status(_settings()))
    if args.json:
        print(json.dumps([s.as_dict() for s in statuses], default=str, indent=2))
    else:
        _print_status(statuses)
    return 1 if any(s.stalled for s in statuses) else 0


async def _status(settings: Settings) -> list[ProjectionStatus]:
    import psycopg

    from consumers.status import gather_status

    assert settings.database_url is not None and settings.kafka_bootstrap is not None
    async with await psycopg.AsyncConnection.connect(settings.database_url, autocommit=True) as conn:
        return await gather_status(conn, settings.kafka_bootstrap)


def _print_status(statuses: list[ProjectionStatus]) -> None:
    if not statuses:
        print("no projection has run yet")
    for s in statuses:
        flag = "STALLED" if s.stalled else ("caught up" if s.lag == 0 else "catching up")
        print(
            f"{s.name} v{s.version} g{s.generation} ({s.state}) {flag}: lag {s.lag} events / {s.lag_seconds:.1f}s, "
            f"{s.events_per_s:.0f} events/s, {s.dead_letters} dead letters, last progress {s.last_progress_at}"
        )
        for p in s.partitions:
            print(
                f"  {p.topic}[{p.partition}] position {p.position} / high watermark {p.high_watermark} "
                f"lag {p.lag} ({p.lag_seconds:.1f}s) {p.events_per_s:.0f}/s dead letters {p.dead_letters}"
            )


# -- rebuild ------------------------------------------------------------------------------------------------
def cmd_rebuild(args: argparse.Namespace) -> int:
    from consumers.rebuild import cancel_rebuild
    from projections.registry import get

    settings = _settings()
    assert settings.database_url is not None
    if args.cancel:
        gen = asyncio.run(cancel_rebuild(settings.database_url, args.name))
        print(f"dropped {gen.schema}" if gen else f"no rebuild of {args.name} is pending")
        return 0
    result = asyncio.run(_rebuild(get(args.name), settings, args))
    _print_result(result)
    return 0 if result.switched else 130


async def _rebuild(projection: Any, settings: Settings, args: argparse.Namespace) -> RebuildResult:
    from consumers.rebuild import Rebuild
    from consumers.runner import install_stop_handlers

    assert settings.database_url is not None and settings.kafka_bootstrap is not None
    stop = asyncio.Event()
    install_stop_handlers(stop)
    rebuild = Rebuild(
        projection,
        bootstrap=settings.kafka_bootstrap,
        database_url=settings.database_url,
        topic_prefix=settings.topic_prefix,
        batch_size=args.batch_size,
        drop_old=not args.keep_old,
        on_progress=_progress_bar,
    )
    return await rebuild.run(stop)


def cmd_rollback(args: argparse.Namespace) -> int:
    from consumers.rebuild import rollback
    from projections.registry import get

    settings = _settings()
    assert settings.database_url is not None
    restored, retired = asyncio.run(rollback(settings.database_url, get(args.name)))
    print(f"readers switched back to {restored.schema} (version {restored.version}); {retired.schema} is retired")
    return 0


def _progress_bar(p: Progress) -> None:
    done = p.position / p.high_watermark if p.high_watermark else 1.0
    bar = "#" * int(done * 30)
    eta = f"{p.eta_s:.0f}s" if p.eta_s is not None else "?"
    print(
        f"\r[{bar:<30}] {p.position}/{p.high_watermark} {done:6.1%} {p.events_per_s:,.0f} events/s ETA {eta}  ",
        end="",
        file=sys.stderr,
        flush=True,
    )


def _print_result(result: RebuildResult) -> None:
    print(file=sys.stderr)
    verb = "resumed and built" if result.resumed else "built"
    if not result.switched:
        print(f"stopped: {result.generation.schema} stays in 'building'; run the same command to resume")
        return
    print(f"{verb} {result.generation.schema}: {result.events} events in {result.seconds:.1f}s; readers switched")
    if result.dropped:
        print(f"  dropped {', '.join(g.schema for g in result.dropped)} once no reader used it")
    for table, (new, old) in result.checksums.items():
        same = "" if old is None else ("  (equal to the live one)" if new == old else f"  (live one: {old})")
        print(f"  checksum {table}: {new}{same}")
