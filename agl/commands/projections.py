"""``agl projections list|run|attach|status|rebuild|rollback``: the projection engine from the command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

    from agl.config import Settings
    from consumers.rebuild import Progress, RebuildResult
    from consumers.status import ProjectionStatus
    from projections.attached import AttachedProjection
    from projections.base import Projection


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser("projections", help="run, attach, inspect and rebuild")
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    sub.add_parser("list", help="built-in, known and attached projections").set_defaults(func=cmd_list)
    run = sub.add_parser("run", help="keep projections up to date (SIGTERM drains their batches and exits)")
    run.add_argument(
        "names", nargs="+", metavar="name", help="a projection name, or module:object; several share one process"
    )
    run.add_argument("--batch-size", type=int, default=2000, help="records per transaction")
    run.add_argument(
        "--no-group", action="store_true", help="take every partition without a consumer group (one instance only)"
    )
    run.add_argument("--python-path", help="a directory to import module:object from (set by `agl up`)")
    run.set_defaults(func=cmd_run)
    attach = sub.add_parser(
        "attach", help="register a projection (module:object) so `agl up` runs it; it catches up from offset 0"
    )
    attach.add_argument("reference", help="module:object naming a Projection")
    attach.add_argument("--no-wait", action="store_true", help="return at once instead of showing the catch-up")
    attach.add_argument(
        "--start-timeout", type=float, default=60.0, help="seconds to wait for `agl up` to start its worker"
    )
    attach.set_defaults(func=cmd_attach)
    detach = sub.add_parser("detach", help="stop an attached projection; its tables are kept unless --drop --yes")
    detach.add_argument("name")
    detach.add_argument("--drop", action="store_true", help="also drop its tables and positions (needs --yes)")
    detach.add_argument("--yes", action="store_true", help="confirm --drop")
    detach.add_argument(
        "--stop-timeout", type=float, default=30.0, help="seconds to wait for `agl up` to stop its worker (--drop)"
    )
    detach.set_defaults(func=cmd_detach)
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


async def _connect(settings: Settings) -> psycopg.AsyncConnection[Any]:
    import psycopg

    assert settings.database_url is not None
    return await psycopg.AsyncConnection.connect(settings.database_url, autocommit=True)


def _resolve(name_or_reference: str, settings: Settings | None = None) -> Projection:
    """A known projection, or an attached one (looked up in PostgreSQL) by name."""
    from projections.errors import UnknownProjection
    from projections.registry import get, load_attached

    try:
        return get(name_or_reference)
    except UnknownProjection:
        entry = asyncio.run(_attached_entry(settings or _settings(), name_or_reference))
        if entry is None:
            raise
        return load_attached(entry.reference, entry.python_path)


async def _attached_entry(settings: Settings, name: str) -> AttachedProjection | None:
    from projections.attached import get_attached

    async with await _connect(settings) as conn:
        return await get_attached(conn, name)


def cmd_list(_: argparse.Namespace) -> int:
    from agl.errors import ConfigError
    from projections.errors import ProjectionError
    from projections.registry import all_projections, builtin_names, load_attached

    builtin = builtin_names()
    for name, projection in sorted(all_projections().items()):
        _print_projection(projection, "built in" if name in builtin else "known")
    try:
        settings = _settings()
    except ConfigError:
        print("(no stack runs and AGL_DATABASE_URL is not set: attached projections are not listed)")
        return 0
    for entry in asyncio.run(_attached_entries(settings)):
        kind = "attached" if entry.attached else "detached"
        try:
            _print_projection(load_attached(entry.reference, entry.python_path), kind, entry.reference)
        except ProjectionError as e:
            print(f"{entry.name:<18} {kind:<9} {entry.reference}\n{'':<18} cannot be imported here: {e}")
    return 0


async def _attached_entries(settings: Settings) -> list[AttachedProjection]:
    from projections.attached import list_attached

    async with await _connect(settings) as conn:
        return await list_attached(conn, include_detached=True)


def _print_projection(projection: Projection, kind: str, reference: str = "") -> None:
    topics = ", ".join(t.name for t in projection.topics)
    where = f"  ({reference})" if reference else ""
    print(f"{projection.name:<18} {kind:<9} v{projection.version}  {topics}{where}")
    print(f"{'':<18} {projection.description}")


def cmd_run(args: argparse.Namespace) -> int:
    from agl.app_name import connection_names
    from agl.errors import ConfigError
    from consumers.runner import run_projections
    from projections.registry import load_attached

    if args.python_path and len(args.names) > 1:
        raise ConfigError("--python-path runs one attached projection: give one name")
    if len(set(args.names)) < len(args.names):
        raise ConfigError(f"a projection is named twice: {' '.join(args.names)}")
    settings = _settings()
    # `agl up` passes the attached reference with the directory it was imported from when it was attached.
    projections = (
        [load_attached(args.names[0], args.python_path)]
        if args.python_path
        else [_resolve(name, settings) for name in args.names]
    )
    if len({p.name for p in projections}) < len(projections):
        raise ConfigError(f"a projection is named twice: {' '.join(args.names)}")
    names = connection_names(args.names, [p.name for p in projections], os.environ.get("PGAPPNAME"))
    asyncio.run(
        run_projections(
            projections, settings, batch_size=args.batch_size, use_group=not args.no_group, application_names=names
        )
    )
    return 0


# -- attach / detach ----------------------------------------------------------------------------------------
def cmd_attach(args: argparse.Namespace) -> int:
    from projections.attached import import_root
    from projections.registry import load_object

    # Imported here first: a reference that does not import is refused before anything is registered.
    projection = load_object(args.reference)
    settings = _settings()
    entry = asyncio.run(_attach(settings, projection, args.reference, import_root(projection, args.reference)))
    print(
        f"attached {entry.name} ({entry.reference}, revision {entry.revision}): `agl up` runs it from now on, "
        "catching up from the start of history",
        flush=True,
    )
    if args.no_wait:
        return 0
    try:
        return asyncio.run(_follow(settings, projection, args.start_timeout))
    except KeyboardInterrupt:
        print(f"\nstopped watching; {entry.name} stays attached (`agl projections status`)")
        return 130


async def _follow(settings: Settings, projection: Projection, start_timeout_s: float) -> int:
    from agl.commands.catch_up import follow_catch_up

    assert settings.kafka_bootstrap is not None
    async with await _connect(settings) as conn:
        return await follow_catch_up(conn, settings.kafka_bootstrap, projection.name, start_timeout_s)


async def _attach(
    settings: Settings, projection: Projection, reference: str, python_path: str | None
) -> AttachedProjection:
    from projections.attached import attach

    async with await _connect(settings) as conn:
        return await attach(conn, projection, reference, python_path)


def cmd_detach(args: argparse.Namespace) -> int:
    from agl.errors import ConfigError

    if args.drop and not args.yes:
        raise ConfigError(f"--drop deletes the tables of {args.name} for good; add --yes to confirm")
    return asyncio.run(_detach(_settings(), args))


async def _detach(settings: Settings, args: argparse.Namespace) -> int:
    from agl.stack.state import StackLock
    from projections.attached import detach, drop_tables, generations, get_attached

    async with await _connect(settings) as conn:
        entry = await detach(conn, args.name)
        schemas = ", ".join(g.schema for g in await generations(conn, args.name)) or "none yet"
        print(f"detached {entry.name}: `agl up` stops its worker within seconds")
        if not args.drop:
            print(
                f"its tables ({schemas}) and positions are kept and no longer updated: `agl projections attach "
                f"{entry.reference}` resumes where it stopped; `agl projections detach {entry.name} --drop --yes` "
                "drops them"
            )
            return 0
        if StackLock(settings.data_dir).held_by_someone():
            # Dropping under a running worker would make it crash-loop on tables that no longer exist.
            deadline = time.monotonic() + args.stop_timeout
            while (current := await get_attached(conn, args.name)) is not None and current.stopped_at is None:
                if time.monotonic() > deadline:
                    print(
                        f"agl projections: the worker of {entry.name} did not stop within {args.stop_timeout:.0f}s; "
                        "its tables are kept (run the command again)",
                        file=sys.stderr,
                    )
                    return 1
                await asyncio.sleep(0.3)
        dropped = await drop_tables(conn, args.name)
        print(f"dropped {', '.join(g.schema for g in dropped) or 'no tables'} with their positions and dead letters")
    return 0


# -- status -------------------------------------------------------------------------------------------------
def cmd_status(args: argparse.Namespace) -> int:
    statuses, attached = asyncio.run(_status(_settings()))
    if args.json:
        print(json.dumps([s.as_dict() for s in statuses], default=str, indent=2))
    else:
        _print_status(statuses, {a.name for a in attached if a.attached})
        _print_attached(attached, {s.name for s in statuses})
    return 1 if any(s.stalled for s in statuses) else 0


async def _status(settings: Settings) -> tuple[list[ProjectionStatus], list[AttachedProjection]]:
    from consumers.status import gather_status
    from projections.attached import list_attached

    assert settings.kafka_bootstrap is not None
    async with await _connect(settings) as conn:
        return await gather_status(conn, settings.kafka_bootstrap), await list_attached(conn, include_detached=True)


def _print_attached(attached: list[AttachedProjection], reported: set[str]) -> None:
    """Attached projections without figures yet, and detached ones (their kept tables fall behind on purpose)."""
    for entry in attached:
        if not entry.attached:
            print(f"{entry.name} detached at {entry.detached_at}: not running, tables kept ({entry.reference})")
        elif entry.name not in reported:
            print(f"{entry.name} attached at {entry.attached_at}: waiting for `agl up` to start it ({entry.reference})")


def _print_status(statuses: list[ProjectionStatus], attached: set[str]) -> None:
    if not statuses:
        print("no projection has run yet")
    for s in statuses:
        flag = "STALLED" if s.stalled else ("caught up" if s.lag == 0 else "catching up")
        kind = ", attached" if s.name in attached else ""
        print(
            f"{s.name} v{s.version} g{s.generation} ({s.state}{kind}) {flag}: lag {s.lag} events / "
            f"{s.lag_seconds:.1f}s, {s.events_per_s:.0f} events/s, {s.dead_letters} dead letters, "
            f"last progress {s.last_progress_at}"
        )
        for p in s.partitions:
            print(
                f"  {p.topic}[{p.partition}] position {p.position} / high watermark {p.high_watermark} "
                f"lag {p.lag} ({p.lag_seconds:.1f}s) {p.events_per_s:.0f}/s dead letters {p.dead_letters}"
            )


# -- rebuild ------------------------------------------------------------------------------------------------
def cmd_rebuild(args: argparse.Namespace) -> int:
    from consumers.rebuild import cancel_rebuild

    settings = _settings()
    assert settings.database_url is not None
    if args.cancel:
        gen = asyncio.run(cancel_rebuild(settings.database_url, args.name))
        print(f"dropped {gen.schema}" if gen else f"no rebuild of {args.name} is pending")
        return 0
    result = asyncio.run(_rebuild(_resolve(args.name, settings), settings, args))
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

    settings = _settings()
    assert settings.database_url is not None
    restored, retired = asyncio.run(rollback(settings.database_url, _resolve(args.name, settings)))
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
