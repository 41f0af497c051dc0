"""``agl agents up`` and ``agl agents status``: the pools of specialised agents (``agl/agents/``).

``agl agents up [--config agents.toml]`` starts each configured instance as an ``agl runner`` child, restarts a
crashed one with backoff and, on SIGTERM or Ctrl-C, stops them all (each drains and deregisters).
``agl agents status`` lists each instance as the API's registry sees it: health, load and current work.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    agents = subparsers.add_parser("agents", help="run and inspect the pools of specialised agents")
    sub = agents.add_subparsers(dest="agents_command", required=True, metavar="SUBCOMMAND")
    up = sub.add_parser("up", help="start the configured agent pools as supervised runner processes")
    up.add_argument(
        "--config", type=Path, default=None, help="pools file (default: the shipped agl/agents/agents.toml)"
    )
    up.add_argument("--api", default=None, help="the API's URL; default: the running stack's, else AGL_API_*")
    up.add_argument("--heartbeat", type=float, default=2.0, metavar="S", help="runners' heartbeat (default 2 s)")
    up.add_argument("--drain-grace", type=float, default=30.0, metavar="S", help="grace on stop (default 30 s)")
    up.set_defaults(func=cmd_up)
    status = sub.add_parser("status", help="each agent instance: health, load and current work")
    status.add_argument("--api", default=None, help="the API's URL; default: the running stack's, else AGL_API_*")
    status.add_argument("--all", action="store_true", help="include stopped instances")
    status.add_argument("--json", action="store_true", help="print the API's answer as JSON")
    status.set_defaults(func=cmd_status)


def _api(args: argparse.Namespace) -> str:
    from agl.config import Settings
    from agl.dev_loop import api_url

    return str(args.api or api_url(Settings()))


def cmd_up(args: argparse.Namespace) -> int:
    from agl.agents.pools import load_pools
    from agl.agents.supervisor import PoolSupervisor
    from agl.config import Settings

    pools = load_pools(args.config)
    settings = Settings()
    logging.getLogger("agl").setLevel(logging.INFO)
    supervisor = PoolSupervisor(
        pools,
        api_url=_api(args),
        logs=settings.data_dir / "logs" / "agents",
        env=os.environ,
        heartbeat_s=args.heartbeat,
        drain_grace_s=args.drain_grace,
        cwd=Path.cwd(),
    )
    return asyncio.run(_up(supervisor))


async def _up(supervisor: Any) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    described = ", ".join(f"{p.agent_type} x{p.instances}" for p in {i.pool for i in supervisor.instances})
    print(f"agl agents up: {len(supervisor.instances)} instances ({described}), API {supervisor.api_url}", flush=True)
    await supervisor.run(stop)
    print("agl agents up: stopped", flush=True)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    import httpx

    from producers.auth.discovery import auth_headers, find_api_key

    params = {} if args.all else {"health": ["healthy", "degraded", "unreachable"]}
    url = _api(args)
    try:
        answer = httpx.get(f"{url}/v1/agents", params=params, timeout=10, headers=auth_headers(find_api_key()))
    except httpx.TransportError as e:
        print(f"agl agents status: the API at {url} does not answer ({e}); is the stack up (`agl up`)?")
        return 1
    if answer.status_code != 200:
        print(f"agl agents status: the API answered {answer.status_code}: {answer.text[:300]}")
        return 1
    page = answer.json()
    if args.json:
        print(json.dumps(page, indent=2))
        return 0
    if not page["items"]:
        print("no agents registered (start them with `agl agents up`)")
        return 0
    print(f"{'agent':<34} {'type':<18} {'health':<12} {'load':<7} {'silent':>7}  current work")
    for a in page["items"]:
        load = f"{a['busy_slots']}/{a['slots'] or '?'}"
        silent = "" if a["silent_s"] is None else f"{a['silent_s']:.0f}s"
        work = ", ".join(a["attempts"]) or "-"
        print(f"{a['agent_id']:<34} {a['agent_type'] or '-':<18} {a['health']:<12} {load:<7} {silent:>7}  {work}")
    return 0
