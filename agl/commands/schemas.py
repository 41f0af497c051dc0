"""``agl schemas export``: JSON Schemas, the AsyncAPI document and the event catalogue, from the code."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser("schemas", help="the event language's documents")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    export = actions.add_parser("export", help="write docs/schemas/*.json, docs/asyncapi.json, docs/events.md")
    export.add_argument("--out", type=Path, default=Path("docs"), help="the docs folder (default: docs)")
    export.add_argument(
        "--readme", type=Path, default=Path("README.md"), help="README whose event catalogue is refreshed"
    )
    export.add_argument("--check", action="store_true", help="write nothing; exit 1 when a document is stale")
    export.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from schemas.export import stale, with_catalogue, write

    readme = args.readme.read_text(encoding="utf-8") if args.readme.exists() else None
    fresh_readme = with_catalogue(readme) if readme is not None else None
    if args.check:
        outdated = stale(args.out) + ([str(args.readme)] if fresh_readme != readme else [])
        for name in outdated:
            print(f"stale: {name}")
        return 1 if outdated else 0
    changed = write(args.out)
    if fresh_readme is not None and fresh_readme != readme:
        args.readme.write_text(fresh_readme, encoding="utf-8")
        changed.append(str(args.readme))
    print(f"agl schemas export: {len(changed)} file(s) updated under {args.out}" if changed else "up to date")
    for name in changed:
        print(f"  {name}")
    return 0
