"""``agl up``, ``agl down``, ``agl status`` and ``agl smoke``: the embedded stack from the command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agl.errors import AlreadyRunningError

if TYPE_CHECKING:
    from agl.config import Settings


def register(subparsers: Any) -> None:
    up = subparsers.add_parser("up", help="start broker, PostgreSQL, migrations, topics and the API")
    _data_dir_flag(up)
    up.add_argument("--broker", choices=["auto", "kafka", "tansu", "external"], default=None)
    up.add_argument(
        "--accept-log-reset",
        action="store_true",
        help="when the broker's log was reset and cannot be restored exactly: accept the loss, start the read "
        "models over (the event archive is always kept)",
    )
    up.add_argument(
        "--agents",
        nargs="?",
        const=True,
        default=False,
        type=Path,
        metavar="CONFIG",
        help="also run the agent pools (`agl agents up`), from CONFIG or the shipped agents.toml",
    )
    up.set_defaults(func=cmd_up)
    down = subparsers.add_parser("down", help="stop the stack running on the data directory")
    _data_dir_flag(down)
    down.set_defaults(func=cmd_down)
    status = subparsers.add_parser("status", help="show each component up or down with its address")
    _data_dir_flag(status)
    status.set_defaults(func=cmd_status)
    smoke = subparsers.add_parser("smoke", help="publish a record and read it back; store and read a vector")
    _data_dir_flag(smoke)
    smoke.set_defaults(func=cmd_smoke)


def _data_dir_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, default=None, help="state directory (default $AGL_DATA_DIR or .agl)")


def _settings(args: argparse.Namespace) -> Settings:
    from agl.config import Settings

    overrides: dict[str, Any] = {}
    if args.data_dir is not None:
        overrides["data_dir"] = args.data_dir
    return Settings(**overrides)


# -- up -----------------------------------------------------------------------------------------------------
def cmd_up(args: argparse.Namespace) -> int:
    from agl.stack.stack import Stack

    settings = _settings(args)
    try:
        stack = Stack(settings, broker=args.broker, accept_log_reset=args.accept_log_reset, agents=args.agents)
        return asyncio.run(_up(stack))
    except AlreadyRunningError as e:
        # The wanted state holds already: report it rather than start a twin.
        print(f"agl up: {e}")
        return 0


async def _up(stack: Any) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    t0 = time.monotonic()
    starting = asyncio.create_task(stack.start())

    def on_signal() -> None:
        stop.set()
        if not starting.done():
            starting.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    try:
        await starting
    except asyncio.CancelledError:
        print("agl up: interrupted while starting; stopped", file=sys.stderr)
        return 130
    if stack.restored is not None:
        print(f"agl up: the broker's log was reset; {stack.restored.describe()}")
    print(f"agl up: ready in {time.monotonic() - t0:.1f}s (data in {stack.data_dir})")
    print(f"  broker    {stack.broker_info.kind:<9} {stack.broker_info.bootstrap}")
    print(f"  postgres            {stack.database_url}")
    if stack.api_url:
        print(f"  api                 {stack.api_url}  (docs at {stack.api_url}/docs)")
    if stack.llm_endpoint:
        print(f"  llm                 {stack.llm_endpoint}  ({stack.llm_model})")
    print("Ctrl-C or `agl down` stops everything.", flush=True)
    try:
        await stack.watch(stop)
    finally:
        await stack.stop()
    print("agl up: stopped", flush=True)
    return 0


# -- down ---------------------------------------------------------------------------------------------------
def cmd_down(args: argparse.Namespace) -> int:
    from agl.stack.state import StackLock, read_state

    settings = _settings(args)
    lock = StackLock(settings.data_dir)
    state = read_state(settings.data_dir)
    if not lock.held_by_someone() or state is None:
        print(f"agl down: no stack runs on {settings.data_dir}")
        return 0
    with contextlib.suppress(ProcessLookupError):
        os.kill(state.pid, signal.SIGTERM)
    deadline = time.monotonic() + 90
    while lock.held_by_someone() and time.monotonic() < deadline:
        time.sleep(0.2)
    if lock.held_by_someone():
        # The supervisor is stuck; its children die with it (parent-death signal).
        with contextlib.suppress(ProcessLookupError):
            os.kill(state.pid, signal.SIGKILL)
        print(f"agl down: the supervisor (pid {state.pid}) did not stop in 90s and was killed", file=sys.stderr)
        return 1
    print("agl down: stopped")
    return 0


# -- status -------------------------------------------------------------------------------------------------
def cmd_status(args: argparse.Namespace) -> int:
    return asyncio.run(_status(_settings(args)))


async def _status(settings: Settings) -> int:
    from agl.stack.llm import llm_up
    from agl.stack.probes import http_up, kafka_up, postgres_up
    from agl.stack.state import StackLock, read_state

    state = read_state(settings.data_dir) if StackLock(settings.data_dir).held_by_someone() else None
    bootstrap = settings.kafka_bootstrap or (state.bootstrap if state else None)
    database_url = settings.database_url or (state.database_url if state else None)
    api_url = state.api_url if state else f"http://{settings.api_host}:{settings.api_port}"
    if state is None and bootstrap is None and database_url is None:
        print(f"stack     down  (no `agl up` runs on {settings.data_dir})")
        return 1
    rows: list[tuple[str, str, str | None]] = []
    kind = state.broker if state else "external"
    rows.append(("broker", f"{kind} {bootstrap}", await kafka_up(bootstrap) if bootstrap else "not configured"))
    rows.append(("postgres", str(database_url), await postgres_up(database_url) if database_url else "not configured"))
    rows.append(("api", str(api_url), await http_up(f"{api_url}/healthz") if api_url else "not configured"))
    llm_endpoint = settings.llm_endpoint or (state.llm_endpoint if state else None)
    if llm_endpoint:
        rows.append(("llm", llm_endpoint, await llm_up(llm_endpoint)))
    if state is not None:
        print(f"stack     up    supervisor pid {state.pid}, started {state.started_at}, data in {settings.data_dir}")
    for name, where, problem in rows:
        print(f"{name:<9} {'up' if problem is None else 'down':<5} {where}" + (f"  ({problem})" if problem else ""))
    healthy = all(problem is None for _, _, problem in rows)
    if healthy and bootstrap and database_url:
        healthy = await _print_projections(bootstrap, database_url)
    return 0 if healthy else 1


async def _print_projections(bootstrap: str, database_url: str) -> bool:
    """One line per projection with its lag; False when one is stalled."""
    import psycopg

    from consumers.status import gather_status

    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        statuses = await gather_status(conn, bootstrap)
    for s in statuses:
        state = "stalled" if s.stalled else "up"
        print(
            f"{'projection':<9} {state:<5} {s.name} g{s.generation} ({s.state}): lag {s.lag} events"
            f" / {s.lag_seconds:.1f}s, {s.events_per_s:.0f} events/s, {s.dead_letters} dead letters"
        )
    return not any(s.stalled for s in statuses)


# -- smoke --------------------------------------------------------------------------------------------------
def cmd_smoke(args: argparse.Namespace) -> int:
    from agl.stack.smoke import smoke

    settings = _settings(args)
    print(asyncio.run(smoke(settings)))
    return 0
