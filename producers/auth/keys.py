"""The API keys' store: PostgreSQL table ``api_keys`` (namespace ``auth``), only a hash of each secret.

A key reads ``agl_<key_id>_<secret>``: ``key_id`` (16 hex digits) finds the row, ``secret`` (32 random bytes,
URL-safe base64) is checked against the stored SHA-256 with a constant-time comparison. A salted slow hash would
add nothing: a 256-bit random secret cannot be guessed from its hash, whatever the hash's speed.

Creating and revoking a key appends ``apikey.created`` / ``apikey.revoked`` to the outbox in the same
transaction, so the audit trail on the log and the table never disagree; the relay publishes them afterwards.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from core.errors import ConfigError, LightningError
from producers import outbox
from producers.auth.scopes import SCOPES
from projections.migrations import load_package_migrations, migrate
from schemas import ApiKeyCreated, ApiKeyRevoked

if TYPE_CHECKING:
    from collections.abc import Iterable

    from psycopg import AsyncConnection

    from producers.publisher import EventPublisher

NAMESPACE = "auth"
KEY_PREFIX = "agl_"
_KEY = re.compile(r"^agl_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")


class UnknownApiKey(LightningError):
    """``agl keys revoke`` named a key id that does not exist."""

    exit_code = 1


@dataclass(frozen=True)
class ApiKeyInfo:
    """What may be shown of a key: never its secret nor its hash."""

    key_id: str
    name: str
    scopes: tuple[str, ...]
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True)
class NewKey:
    info: ApiKeyInfo
    #: the whole key, shown once: only its hash is kept
    key: str
    #: the audit event's outbox row, to wait for its publication
    outbox_ids: list[int]


def parse_key(text: str) -> tuple[str, str] | None:
    """``(key_id, secret)`` of a well-formed key, else None (no query is spent on malformed keys)."""
    match = _KEY.match(text.strip())
    return (match[1], match[2]) if match else None


def secret_hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def checked_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    """The scopes in canonical order, without repeats. Raises ConfigError for an unknown or missing one."""
    wanted = set(scopes)
    unknown = sorted(wanted - set(SCOPES))
    if unknown or not wanted:
        raise ConfigError(f"scopes must be one or more of {', '.join(SCOPES)} (got {', '.join(unknown) or 'none'})")
    return tuple(s for s in SCOPES if s in wanted)


async def migrate_api_keys(conn: AsyncConnection[Any]) -> list[int]:
    """Create ``api_keys`` (``producers/auth/sql``) under the ``auth`` namespace."""
    return await migrate(conn, NAMESPACE, load_package_migrations("producers.auth"))


async def create_key(
    conn: AsyncConnection[Any],
    publisher: EventPublisher,
    scopes: Iterable[str],
    *,
    name: str = "",
    created_by: str | None = None,
) -> NewKey:
    """A new key with ``scopes``, stored hashed, and its ``apikey.created`` event in the outbox (one transaction)."""
    granted = checked_scopes(scopes)
    key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    event = ApiKeyCreated(key_id=key_id, name=name, scopes=granted, created_by=created_by)
    async with conn.transaction():
        cur = await conn.execute(
            "INSERT INTO api_keys (key_id, name, scopes, hash) VALUES (%s, %s, %s, %s) RETURNING created_at",
            (key_id, name, list(granted), secret_hash(secret)),
        )
        row = await cur.fetchone()
        assert row is not None
        ids = await outbox.append(conn, publisher, [event])
    info = ApiKeyInfo(key_id, name, granted, row[0], None)
    return NewKey(info, f"{KEY_PREFIX}{key_id}_{secret}", ids)


async def revoke_key(
    conn: AsyncConnection[Any], publisher: EventPublisher, key_id: str, *, revoked_by: str | None = None
) -> list[int]:
    """Revoke ``key_id`` (its ``apikey.revoked`` event in the same transaction); the outbox rows appended, none
    when it was already revoked. Raises UnknownApiKey."""
    async with conn.transaction():
        cur = await conn.execute(
            "UPDATE api_keys SET revoked_at = now() WHERE key_id = %s AND revoked_at IS NULL RETURNING key_id",
            (key_id,),
        )
        if await cur.fetchone() is None:
            cur = await conn.execute("SELECT 1 FROM api_keys WHERE key_id = %s", (key_id,))
            if await cur.fetchone() is None:
                raise UnknownApiKey(f"no API key {key_id!r} (see `agl keys list`)")
            return []
        return await outbox.append(conn, publisher, [ApiKeyRevoked(key_id=key_id, revoked_by=revoked_by)])


async def list_keys(conn: AsyncConnection[Any]) -> list[ApiKeyInfo]:
    cur = await conn.execute("SELECT key_id, name, scopes, created_at, revoked_at FROM api_keys ORDER BY created_at")
    return [ApiKeyInfo(r[0], r[1], tuple(r[2]), r[3], r[4]) for r in await cur.fetchall()]


async def verified_scopes(conn: AsyncConnection[Any], key: str) -> tuple[str, ...] | None:
    """The scopes of ``key`` when it is a live (stored, unrevoked) key, else None."""
    parsed = parse_key(key)
    if parsed is None:
        return None
    key_id, secret = parsed
    cur = await conn.execute("SELECT scopes, hash FROM api_keys WHERE key_id = %s AND revoked_at IS NULL", (key_id,))
    row = await cur.fetchone()
    if row is None or not hmac.compare_digest(bytes(row[1]), secret_hash(secret)):
        return None
    return tuple(row[0])
