"""``agl watchdog``: end overdue attempts (``agl up`` runs it as a supervised child)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "watchdog", help="end attempts past their timeout or unresponsive deadline (requeue or fail them)"
    )
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between sweeps (default 0.5)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from agl.config import Settings
    from consumers.runner import install_stop_handlers
    from producers.watchdog import run_watchdog

    settings = Settings()

    async def main() -> None:
        stop = asyncio.Event()
        install_stop_handlers(stop)
        sys.stderr.write("watchdog running\n")
        sys.stderr.flush()
        await run_watchdog(settings, stop, interval_s=args.interval)

    asyncio.run(main())
    return 0
