"""The ``agl`` command. Each subcommand lives in ``agl/commands/<name>.py`` and registers itself."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import TYPE_CHECKING

from pydantic import ValidationError

from agl.app_name import application_name
from agl.errors import LightningError

if TYPE_CHECKING:
    from collections.abc import Sequence

#: Modules with a ``register(subparsers)`` function. Add a module here to add subcommands.
COMMAND_MODULES = (
    "agl.commands.stack",
    "agl.commands.api",
    "agl.commands.projections",
    "agl.commands.dlq",
    "agl.commands.topics",
    "agl.commands.schemas",
    "agl.commands.llm",
    "agl.commands.runner",
    "agl.commands.agents",
    "agl.commands.watchdog",
    "agl.commands.knowledge",
    "agl.commands.triplets",
    "agl.commands.keys",
    "agl.commands.dashboard",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agl",
        description="Agent Lightning ES: an event-sourced backbone on Kafka and PostgreSQL. "
        "Configuration comes from AGL_* environment variables.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; errors end as one line on stderr and a non-zero exit code."""
    args = build_parser().parse_args(argv)
    if argv is None:  # the command itself, not a caller in-process (whose environment is its own)
        # Read by libpq at every connect: pg_stat_activity shows which command each connection is.
        os.environ.setdefault("PGAPPNAME", application_name(sys.argv[1:]))
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        code: int = args.func(args)
    except LightningError as e:
        print(f"agl {args.command}: {e}", file=sys.stderr)
        return e.exit_code
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        print(f"agl {args.command}: invalid setting AGL_{where.upper()}: {first['msg']}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
