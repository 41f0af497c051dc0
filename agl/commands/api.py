"""``agl api``: serve the HTTP API (``agl up`` runs it as a supervised child)."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser("api", help="serve the HTTP API")
    parser.set_defaults(func=run)


def run(_: argparse.Namespace) -> int:
    import uvicorn

    from agl.app import create_app
    from agl.commands.process_gc import prepare_to_serve
    from agl.config import Settings
    from agl.observability.logs import configure_logging

    settings = Settings()
    configure_logging(settings.log_format, settings.log_level)
    app = create_app(settings)
    prepare_to_serve()
    # log_config=None: uvicorn's loggers go through our handler (one format, with correlation ids).
    uvicorn.run(app, host=settings.api_host, port=settings.api_port, log_level="warning", log_config=None)
    return 0
