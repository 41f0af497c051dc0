"""``agl runner --agent module:object``: run an agent on the rollouts the API hands out, until stopped.

SIGTERM or Ctrl-C drains (no new claims, running attempts get the grace period, the worker deregisters); a
second signal stops at once.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agl.errors import ConfigError

if TYPE_CHECKING:
    from agl.agent import LitAgent


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "runner", help="run an agent on claimed rollouts", description=__doc__
    )
    parser.add_argument("--agent", required=True, help="module:object, a LitAgent (or class) or a rollout function")
    parser.add_argument("--slots", type=int, default=1, help="attempts run at once (default 1)")
    parser.add_argument("--capabilities", default="", help="comma-separated capabilities this worker offers")
    parser.add_argument("--api", default=None, help="the API's URL; default: the running stack's, else AGL_API_*")
    parser.add_argument("--worker-id", default=None, help="default: <host>-<pid>-<random>")
    parser.add_argument("--max-rollouts", type=int, default=None, help="claim this many, finish them, exit")
    parser.add_argument("--idle-exit", type=float, default=None, metavar="S", help="exit after S s with no work")
    parser.add_argument("--heartbeat", type=float, default=5.0, metavar="S", help="heartbeat period (default 5 s)")
    parser.add_argument("--drain-grace", type=float, default=30.0, metavar="S", help="SIGTERM grace (default 30 s)")
    parser.set_defaults(func=run)


def load_agent(spec: str) -> LitAgent[Any]:
    """The agent named ``module:object``: a LitAgent, a LitAgent class (instantiated) or a rollout function."""
    from agl.agent import LitAgent, rollout

    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"--agent {spec!r}: expected module:object")
    # Like `python -m`, the working directory is importable: `examples.math_agent:agent` works from a clone.
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        target: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"--agent {spec!r}: {e}") from e
    if isinstance(target, LitAgent):
        return target
    if isinstance(target, type) and issubclass(target, LitAgent):
        return target()
    if callable(target):
        return rollout(target)
    raise ConfigError(f"--agent {spec!r} is neither a LitAgent nor a function")


def run(args: argparse.Namespace) -> int:
    from agl.commands.process_gc import prepare_to_serve
    from agl.config import Settings
    from agl.dev_loop import api_url
    from agl.runner import RunnerOptions

    if args.slots < 1:
        raise ConfigError("--slots must be at least 1")
    options = RunnerOptions(
        slots=args.slots,
        capabilities=tuple(c.strip() for c in args.capabilities.split(",") if c.strip()),
        worker_id=args.worker_id,
        max_rollouts=args.max_rollouts,
        idle_exit_s=args.idle_exit,
        heartbeat_s=args.heartbeat,
        drain_grace_s=args.drain_grace,
    )
    agent = load_agent(args.agent)
    settings = Settings()
    logging.getLogger("agl").setLevel(settings.log_level.upper())
    import producers.client  # noqa: F401  (what _serve uses, imported before the freeze so that it is frozen too)

    prepare_to_serve()
    return asyncio.run(_serve(agent, args.api or api_url(settings), options))


async def _serve(agent: LitAgent[Any], url: str, options: Any) -> int:
    from agl.runner import Runner
    from producers.client import AsyncClient, RetryPolicy

    # One try per call: the runner itself retries every report, with jittered backoff and no limit.
    async with AsyncClient(url, retry=RetryPolicy(attempts=1)) as client:
        runner = Runner(agent, client, options)
        main = asyncio.current_task()
        loop = asyncio.get_running_loop()

        def on_signal() -> None:
            if runner.stopping and main is not None:
                main.cancel()  # the second signal: stop now
            runner.stop()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        print(f"runner {runner.worker_id}: {options.slots} slots, API {url}", flush=True)
        try:
            ends = await runner.run()
        except asyncio.CancelledError:
            print(f"runner {runner.worker_id}: stopped", flush=True)
            return 130
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
    summary = ", ".join(f"{count} {end}" for end, count in sorted(ends.items())) or "no attempts"
    print(f"runner {runner.worker_id}: {summary}", flush=True)
    return 0
