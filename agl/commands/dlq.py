"""``agl dlq list|show|replay|discard``: records a projection could not apply."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser("dlq", help="list, show, replay and discard dead letters")
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    list_ = sub.add_parser("list", help="parked records (of the active generations)")
    list_.add_argument("--projection", default=None)
    list_.add_argument("--all", action="store_true", help="also replayed and discarded ones")
    list_.add_argument("--limit", type=int, default=100)
    list_.set_defaults(func=cmd_list)
    show = sub.add_parser("show", help="one dead letter with its error, headers and payload")
    show.add_argument("id", type=int)
    show.set_defaults(func=cmd_show)
    replay = sub.add_parser("replay", help="apply parked records again, in park order")
    replay.add_argument("projection")
    replay.add_argument("--id", type=int, action="append", dest="ids", help="only these (repeatable)")
    replay.set_defaults(func=cmd_replay)
    discard = sub.add_parser(
        "discard", help="close a parked record without applying it (recorded), so its key flows again"
    )
    discard.add_argument("id", type=int)
    discard.add_argument("--reason", required=True, help="why it is discarded (kept with the letter)")
    discard.add_argument("--by", default=None, help="who discards it (default: the login name)")
    discard.set_defaults(func=cmd_discard)


def _database_url() -> str:
    from agl.config import Settings
    from agl.stack.state import with_running_stack

    url = with_running_stack(Settings(), need=("database_url",)).database_url
    assert url is not None
    return url


def cmd_list(args: argparse.Namespace) -> int:
    import psycopg

    from projections.dead_letters import list_dead_letters

    async def go() -> None:
        async with await psycopg.AsyncConnection.connect(_database_url(), autocommit=True) as conn:
            letters = await list_dead_letters(
                conn, args.projection, status=None if args.all else "parked", limit=args.limit
            )
        for d in letters:
            where = f"{d.topic}[{d.partition}]@{d.offset}"
            note = (
                d.error if d.status == "parked" else f"{d.resolution} ({d.resolved_by}, {d.resolved_at:%Y-%m-%d %H:%M})"
            )
            print(f"{d.id:>6} {d.projection:<12} {d.status:<9} {d.reason:<12} {where:<40} {note[:80]}")
        if not letters:
            print("no dead letters")

    asyncio.run(go())
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    import psycopg

    from agl.errors import LightningError
    from projections.dead_letters import get_dead_letter

    async def go() -> None:
        async with await psycopg.AsyncConnection.connect(_database_url(), autocommit=True) as conn:
            d = await get_dead_letter(conn, args.id)
        if d is None:
            raise LightningError(f"no dead letter {args.id}")
        body = {
            "id": d.id, "projection": d.projection, "generation": d.generation, "topic": d.topic,
            "partition": d.partition, "offset": d.offset, "key": None if d.key is None else bytes(d.key).decode(
                errors="replace"), "event_id": str(d.event_id) if d.event_id else None, "event_type": d.event_type,
            "reason": d.reason, "status": d.status, "error": d.error, "created_at": str(d.created_at),
            "resolved_at": None if d.resolved_at is None else str(d.resolved_at), "resolved_by": d.resolved_by,
            "resolution": d.resolution,
            "headers": {n: v.decode(errors="replace") for n, v in d.header_pairs()},
            "payload": None if d.payload is None else bytes(d.payload).decode(errors="replace"),
        }  # fmt: skip
        print(json.dumps(body, indent=2))

    asyncio.run(go())
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    import psycopg

    from agl.errors import LightningError
    from projections.dead_letters import replay
    from projections.registry import get
    from projections.tracking import active_generation

    projection = get(args.projection)

    async def go() -> int:
        async with await psycopg.AsyncConnection.connect(_database_url(), autocommit=True) as conn:
            gen = await active_generation(conn, projection.name)
            if gen is None:
                raise LightningError(f"{projection.name} has no active generation")
            result = await replay(conn, projection, gen, args.ids)
        print(
            f"replayed {result.replayed}, still parked {result.still_parked}, "
            f"already applied (closed, not applied again) {result.already_applied}"
        )
        return 0 if result.still_parked == 0 else 1

    return asyncio.run(go())


def cmd_discard(args: argparse.Namespace) -> int:
    import getpass

    import psycopg

    from projections.dead_letters import discard

    try:
        by = args.by or getpass.getuser()
    except (OSError, KeyError):  # no login name in this environment (a container without a passwd entry)
        by = "unknown"

    async def go() -> None:
        async with await psycopg.AsyncConnection.connect(_database_url(), autocommit=True) as conn:
            done = await discard(conn, args.id, reason=args.reason, by=by)
        d = done.letter
        print(f"discarded {d.id} ({d.projection} {d.topic}[{d.partition}]@{d.offset}) by {by}: {args.reason}")
        if done.same_key_parked:
            print(
                f"{done.same_key_parked} more records of its key are parked; "
                f"`agl dlq replay {d.projection}` applies them now"
            )

    asyncio.run(go())
    return 0
