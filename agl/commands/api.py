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
    from agl.config import Settings

    settings = Settings()
    uvicorn.run(create_app(settings), host=settings.api_host, port=settings.api_port, log_level="warning")
    return 0
