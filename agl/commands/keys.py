"""``agl keys create|list|revoke``: API keys, on the database directly (the stack's, or ``AGL_DATABASE_URL``).

A key is shown once, by ``create`` (alone on its last line, for scripts: ``KEY=$(agl keys create ... | tail -1)``);
only its hash is stored. Each change is audited as an event through the outbox: this command then waits a little
for it to be on the log (published by the API's relay, or by its own when no API runs).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

    from agl.config import Settings

#: How long the command waits for its audit event to be on the log before saying it is still pending.
PUBLISH_WAIT_S = 20.0


def register(subparsers: Any) -> None:
    from producers.auth.scopes import SCOPES

    parser: argparse.ArgumentParser = subparsers.add_parser("keys", help="create, list and revoke API keys")
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = sub.add_parser("create", help="a new key with the given scopes; prints it alone on its last line")
    create.add_argument(
        "--scope", action="append", required=True, choices=SCOPES, dest="scopes", help="repeatable; admin = all"
    )
    create.add_argument("--name", default="", help="what the key is for (shown by `agl keys list`)")
    create.set_defaults(func=cmd_create)
    list_ = sub.add_parser("list", help="every key: id, name, scopes, created, revoked (never a secret)")
    list_.set_defaults(func=cmd_list)
    revoke = sub.add_parser("revoke", help="revoke a key (refused by every API within seconds)")
    revoke.add_argument("key_id")
    revoke.set_defaults(func=cmd_revoke)


def _settings() -> Settings:
    from agl.config import Settings
    from agl.stack.state import with_running_stack

    return with_running_stack(Settings(), need=("database_url",))


async def _connect(settings: Settings) -> Any:
    import psycopg

    from producers.auth.keys import migrate_api_keys
    from producers.idempotency import migrate_commands

    assert settings.database_url is not None
    conn = await psycopg.AsyncConnection.connect(settings.database_url, autocommit=True)
    await migrate_commands(conn)  # the outbox
    await migrate_api_keys(conn)
    return conn


def _encoder(settings: Settings) -> Any:
    """A publisher used only to encode events for the outbox (it never connects)."""
    from producers.publisher import EventPublisher

    return EventPublisher(settings.kafka_bootstrap or "", topic_prefix=settings.topic_prefix)


async def _publish(settings: Settings, ids: Sequence[int]) -> None:
    """Wait until the outbox rows ``ids`` are on the log; say so on stderr when they are not (they stay pending)."""
    from psycopg_pool import AsyncConnectionPool

    from agl.errors import LightningError
    from producers.outbox import OutboxRelay
    from producers.publisher import EventPublisher, PublisherConfig

    if not ids:
        return
    pending = "the audit event stays in the outbox and is published by the next API to run"
    if not settings.kafka_bootstrap:
        print(f"agl keys: no broker known; {pending}", file=sys.stderr)
        return
    assert settings.database_url is not None
    config = PublisherConfig(retry_budget_s=PUBLISH_WAIT_S / 2)
    try:
        async with (
            AsyncConnectionPool(settings.database_url, min_size=1, max_size=2, open=False) as pool,
            EventPublisher(settings.kafka_bootstrap, topic_prefix=settings.topic_prefix, config=config) as publisher,
            OutboxRelay(settings.database_url, publisher) as relay,
        ):
            await relay.wait_published(pool, ids, PUBLISH_WAIT_S)
    except (LightningError, TimeoutError) as e:
        print(f"agl keys: {e}; {pending}", file=sys.stderr)


def cmd_create(args: argparse.Namespace) -> int:
    from producers.auth.keys import checked_scopes, create_key

    settings = _settings()
    scopes = checked_scopes(args.scopes)

    async def go() -> Any:
        async with await _connect(settings) as conn:
            new = await create_key(conn, _encoder(settings), scopes, name=args.name, created_by=getpass.getuser())
        await _publish(settings, new.outbox_ids)
        return new

    new = asyncio.run(go())
    print(f"created API key {new.info.key_id} ({', '.join(new.info.scopes)}); it is shown only now:")
    print(new.key)
    return 0


def cmd_list(_: argparse.Namespace) -> int:
    from producers.auth.keys import list_keys

    settings = _settings()

    async def go() -> Any:
        async with await _connect(settings) as conn:
            return await list_keys(conn)

    keys = asyncio.run(go())
    print(f"{'key id':<16}  {'name':<24}  {'scopes':<28}  {'created':<16}  revoked")
    for k in keys:
        revoked = f"{k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "-"
        print(f"{k.key_id:<16}  {k.name[:24]:<24}  {','.join(k.scopes):<28}  {k.created_at:%Y-%m-%d %H:%M}  {revoked}")
    if not keys:
        print("no API keys (create one with `agl keys create --scope SCOPE`)")
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    from producers.auth.keys import revoke_key

    settings = _settings()

    async def go() -> list[int]:
        async with await _connect(settings) as conn:
            ids = await revoke_key(conn, _encoder(settings), args.key_id, revoked_by=getpass.getuser())
        await _publish(settings, ids)
        return ids

    ids = asyncio.run(go())
    from producers.auth.middleware import CACHE_S

    state = "revoked" if ids else "was already revoked"
    print(f"API key {args.key_id} {state}; every API refuses it within {CACHE_S:.0f} s")
    return 0
