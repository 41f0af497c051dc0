"""``agl dashboard``: the dashboard's URL with the API key in its fragment (``#key=...``).

A browser cannot send a header when it opens a page; the fragment never leaves the browser, and the page's script
sends the key as a header with each read (then drops it from the address bar).
"""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "dashboard", help="print the dashboard's URL, carrying the API key for the browser"
    )
    parser.add_argument("--api", default=None, help="the API's base URL (default: the running stack's)")
    parser.set_defaults(func=cmd_dashboard)


def cmd_dashboard(args: argparse.Namespace) -> int:
    from urllib.parse import quote

    from agl.config import Settings
    from agl.dev_loop import api_url
    from producers.auth.discovery import find_api_key, read_key_file

    settings = Settings()
    url = f"{(args.api or api_url(settings)).rstrip('/')}/dashboard"
    key = find_api_key() or read_key_file(settings.data_dir)
    print(f"{url}#key={quote(key, safe='')}" if key else url)
    return 0
