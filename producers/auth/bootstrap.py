"""The local user's admin key: ``agl up`` makes one on first start and saves it as ``<data_dir>/api-key`` (0600),
where the CLI, the SDK and the runners find it, so the embedded stack stays one command.

A saved key that no longer works (revoked, or a database that never knew it) is replaced by a new one.
"""

from __future__ import annotations

import getpass
from typing import TYPE_CHECKING, Any

from producers.auth.discovery import read_key_file, write_key_file
from producers.auth.keys import create_key, migrate_api_keys, verified_scopes
from producers.idempotency import migrate_commands
from producers.publisher import EventPublisher

if TYPE_CHECKING:
    from pathlib import Path

    from psycopg import AsyncConnection

LOCAL_ADMIN_NAME = "local admin (agl up)"


async def ensure_local_admin_key(conn: AsyncConnection[Any], data_dir: Path, *, topic_prefix: str = "") -> str:
    """The admin key saved in ``data_dir`` when it still works, else a new one (saved there). Its creation is
    audited through the outbox; the API's relay publishes it once the API runs."""
    await migrate_commands(conn)  # the outbox
    await migrate_api_keys(conn)
    saved = read_key_file(data_dir)
    if saved is not None and "admin" in (await verified_scopes(conn, saved) or ()):
        return saved
    encoder = EventPublisher("", topic_prefix=topic_prefix)  # encodes the event for the outbox; never connects
    new = await create_key(conn, encoder, ["admin"], name=LOCAL_ADMIN_NAME, created_by=_login())
    write_key_file(data_dir, new.key)
    return new.key


def _login() -> str | None:
    try:
        return getpass.getuser()
    except OSError:  # no login name in this environment (a container without a passwd entry)
        return None
