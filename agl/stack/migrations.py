"""The stack's own tables (``stack_state``: the log epoch, the archive's watermarks at the last stop).

They belong to the stack, not to the projection engine, so they live in their own migration namespace
(``stack``, files in ``agl/stack/sql/``) beside the engine's ``core`` namespace. ``agl up`` runs core first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from projections.migrations import load_package_migrations, migrate

if TYPE_CHECKING:
    from psycopg import AsyncConnection

NAMESPACE = "stack"


async def migrate_stack(conn: AsyncConnection[Any]) -> list[int]:
    """Apply the stack's migrations that have not run yet; return the versions applied."""
    return await migrate(conn, NAMESPACE, load_package_migrations("agl.stack"))
