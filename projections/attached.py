"""Attached projections: read models a user added to a deployment, registered in PostgreSQL.

``agl projections attach module:object`` writes a row here; every ``agl up`` on the database runs a worker for
each attached row (restarting it, reporting its status and lag like a built-in one) and notices a new or
detached row within seconds. Detaching stops the worker and keeps its generation schemas and positions, so
attaching again resumes where it stood; :func:`drop_tables` removes them for good.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from projections.errors import ProjectionError, UnknownProjection
from projections.registry import builtin_names
from projections.tracking import Generation, drop_generation

if TYPE_CHECKING:
    from psycopg import AsyncConnection

    from projections.base import Projection


class AttachConflict(ProjectionError):
    """The name is taken by a built-in projection or by another attached one."""

    exit_code = 2


@dataclass(frozen=True)
class AttachedProjection:
    name: str
    reference: str
    python_path: str | None
    revision: int
    attached_at: datetime
    detached_at: datetime | None
    stopped_at: datetime | None

    @property
    def attached(self) -> bool:
        return self.detached_at is None


def import_root(projection: Projection, reference: str) -> str | None:
    """The ``sys.path`` entry ``reference``'s module was imported from, or None for an installed one.

    A worker started by ``agl up`` runs in the supervisor's directory, which need not be the one the user attached
    from: storing the root lets it import ``examples.my_model`` however it was started.
    """
    module_name = reference.partition(":")[0]
    module = sys.modules.get(module_name)
    filename = getattr(module, "__file__", None)
    if filename is None:
        return None
    root = Path(filename).resolve().parent
    # a package's __init__ sits one level deeper than a module of the same dotted name
    depth = module_name.count(".") + (1 if Path(filename).name == "__init__.py" else 0)
    for _ in range(depth):
        root = root.parent
    if "site-packages" in root.parts or "dist-packages" in root.parts:
        return None
    return str(root)


def _row(values: tuple[Any, ...]) -> AttachedProjection:
    return AttachedProjection(*values)


async def get_attached(conn: AsyncConnection[Any], name: str) -> AttachedProjection | None:
    cur = await conn.execute(
        "SELECT name, reference, python_path, revision, attached_at, detached_at, stopped_at "
        "FROM attached_projections WHERE name = %s",
        (name,),
    )
    row = await cur.fetchone()
    return None if row is None else _row(row)


async def list_attached(conn: AsyncConnection[Any], *, include_detached: bool = False) -> list[AttachedProjection]:
    cur = await conn.execute(
        "SELECT name, reference, python_path, revision, attached_at, detached_at, stopped_at FROM attached_projections "
        "WHERE %s OR detached_at IS NULL ORDER BY name",
        (include_detached,),
    )
    return [_row(row) for row in await cur.fetchall()]


async def attach(
    conn: AsyncConnection[Any], projection: Projection, reference: str, python_path: str | None = None
) -> AttachedProjection:
    """Register ``projection`` (imported from ``reference``) so ``agl up`` runs it.

    Attaching the same name again, attached or detached, replaces the reference and bumps the revision: the
    supervisor restarts the worker on the current code, which resumes from the stored positions.
    """
    if projection.name in builtin_names():
        raise AttachConflict(f"{projection.name} is a built-in projection; `agl up` already runs it")
    async with conn.transaction():
        # Two attaches of one name at once: the check below reads, then writes, so they must take turns.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"agl.attach.{projection.name}",))
        current = await get_attached(conn, projection.name)
        if current is not None and current.attached and current.reference != reference:
            raise AttachConflict(
                f"{projection.name} is already attached as {current.reference}; "
                f"`agl projections detach {projection.name}` first"
            )
        cur = await conn.execute(
            "INSERT INTO attached_projections (name, reference, python_path) VALUES (%s, %s, %s) "
            "ON CONFLICT (name) DO UPDATE SET reference = excluded.reference, python_path = excluded.python_path, "
            "revision = attached_projections.revision + 1, attached_at = now(), detached_at = NULL, "
            "stopped_at = NULL RETURNING name, reference, python_path, revision, attached_at, detached_at, stopped_at",
            (projection.name, reference, python_path),
        )
        row = await cur.fetchone()
    assert row is not None
    return _row(row)


async def detach(conn: AsyncConnection[Any], name: str) -> AttachedProjection:
    """Mark ``name`` detached: the supervisor stops its worker; its tables and positions are kept."""
    cur = await conn.execute(
        "UPDATE attached_projections SET detached_at = coalesce(detached_at, now()) WHERE name = %s "
        "RETURNING name, reference, python_path, revision, attached_at, detached_at, stopped_at",
        (name,),
    )
    row = await cur.fetchone()
    if row is None:
        hint = " (built-in projections cannot be detached)" if name in builtin_names() else ""
        raise UnknownProjection(f"no projection named {name!r} is attached{hint}")
    return _row(row)


async def mark_stopped(conn: AsyncConnection[Any], name: str) -> None:
    """The supervisor's acknowledgement that the worker of a detached projection no longer runs."""
    await conn.execute(
        "UPDATE attached_projections SET stopped_at = now() "
        "WHERE name = %s AND detached_at IS NOT NULL AND stopped_at IS NULL",
        (name,),
    )


async def generations(conn: AsyncConnection[Any], name: str) -> list[Generation]:
    """Every generation of ``name``, whatever its state (what its tables are)."""
    cur = await conn.execute(
        "SELECT generation, version, state FROM projection_generations WHERE projection = %s ORDER BY generation",
        (name,),
    )
    return [Generation(name, g, v, s) for g, v, s in await cur.fetchall()]


async def drop_tables(conn: AsyncConnection[Any], name: str) -> list[Generation]:
    """Forget a detached projection: drop every generation schema, its positions and dead letters, and its row."""
    entry = await get_attached(conn, name)
    if entry is None:
        raise UnknownProjection(f"no projection named {name!r} is attached")
    if entry.attached:
        raise AttachConflict(f"{name} is attached; detach it before dropping its tables")
    dropped = await generations(conn, name)
    for gen in dropped:
        await drop_generation(conn, gen)
    await conn.execute("DELETE FROM attached_projections WHERE name = %s AND detached_at IS NOT NULL", (name,))
    return dropped
