"""Numbered SQL migrations, applied once each under an advisory lock.

A namespace groups the migrations of one owner (``core`` for the foundation, a projection's name for its
own tables), so projections can ship migrations without renumbering anyone else's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

    from psycopg import AsyncConnection

_NAME = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")
#: Any constant shared by all migrators; it serialises concurrent starts of several processes.
_LOCK_KEY = 0x61676C_6D6967  # "agl" "mig"

_BOOKKEEPING = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    namespace  text        NOT NULL,
    version    integer     NOT NULL,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (namespace, version)
)
"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def load_package_migrations(package: str, folder: str = "sql") -> list[Migration]:
    """Read ``NNN_name.sql`` files shipped in ``package/folder``, in version order."""
    found: list[Migration] = []
    for entry in resources.files(package).joinpath(folder).iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    assert len(set(versions)) == len(versions), f"duplicate migration numbers in {package}/{folder}"
    return found


async def migrate(conn: AsyncConnection[Any], namespace: str, migrations: Sequence[Migration]) -> list[int]:
    """Apply the migrations of ``namespace`` that have not run yet; return the versions applied.

    Each migration runs in its own transaction together with its bookkeeping row, so a failed one leaves
    nothing half-applied.
    """
    applied: list[int] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        await conn.execute(_BOOKKEEPING)
        cur = await conn.execute("SELECT version FROM schema_migrations WHERE namespace = %s", (namespace,))
        done = {row[0] for row in await cur.fetchall()}
        for migration in migrations:
            if migration.version in done:
                continue
            async with conn.transaction():
                await conn.execute(migration.sql.encode())
                await conn.execute(
                    "INSERT INTO schema_migrations (namespace, version, name) VALUES (%s, %s, %s)",
                    (namespace, migration.version, migration.name),
                )
            applied.append(migration.version)
    return applied


async def migrate_core(conn: AsyncConnection[Any]) -> list[int]:
    """The foundation's tables: pgvector, consumer positions and the projection engine's tables.

    Its first migration also creates ``stack_state``, kept for databases migrated before the stack had its own
    migration namespace (``stack``), which owns that table now and which the stack applies after this one.
    """
    return await migrate(conn, "core", load_package_migrations("projections"))
