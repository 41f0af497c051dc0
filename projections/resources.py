"""The resources read model: every published version of every ``resources_id``, kept side by side.

A version is written once: the first ``resources.published`` of a ``(resources_id, resources_version)`` wins
(all events of one id share a partition, so "first" is the log's order), and a copy or a second publication of
the same version changes nothing. That makes every event idempotent: the engine keeps no ``event_id`` for them.

"Latest" needs an order between ids, which may sit on different partitions, so it is not the log's order:
the latest version is the one with the greatest ``(created_at, resources_id, resources_version)``, where
``created_at`` is the event's ``occurred_at``. Ties on the clock are broken by the id and version, so every
replica and every rebuild agrees whatever order the partitions were read in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from projections.base import Envelope, Projection
from projections.migrations import load_package_migrations
from schemas import ResourcesPublished
from schemas.topics import RESOURCES

if TYPE_CHECKING:
    from psycopg import AsyncConnection


@dataclass
class ResourcesVersion:
    resources_id: str
    resources_version: int
    resources: dict[str, Any]
    created_at: datetime


@dataclass
class ResourcesSummary:
    resources_id: str
    latest_version: int
    versions: int
    names: list[str]
    created_at: datetime
    updated_at: datetime


async def apply(envelopes: Sequence[Envelope], conn: AsyncConnection[Any]) -> None:
    """Insert each version once; a version already stored (a copy, or a re-publication) is left as it was."""
    events = cast("list[ResourcesPublished]", [e.event for e in envelopes])
    if not events:
        return
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO resources (resources_id, resources_version, resources, names, created_at, event_id) "
            "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (resources_id, resources_version) DO NOTHING",
            [
                (
                    e.resources_id,
                    e.resources_version,
                    Jsonb({name: r.model_dump(mode="json") for name, r in e.resources.items()}),
                    sorted(e.resources),
                    e.occurred_at,
                    e.event_id,
                )
                for e in events
            ],
        )


# -- read queries (run with search_path at the active generation) --------------------------------------------------
_VERSION_COLS = "resources_id, resources_version, resources, created_at"


async def list_resources(
    conn: AsyncConnection[Any], *, limit: int = 50, offset: int = 0
) -> tuple[list[ResourcesSummary], int]:
    """One summary per ``resources_id`` (by id), with its newest version's names, and the number of ids."""
    cur = await conn.execute("SELECT count(DISTINCT resources_id) FROM resources")
    total_row = await cur.fetchone()
    async with conn.cursor(row_factory=class_row(ResourcesSummary)) as rows:
        await rows.execute(
            "SELECT newest.resources_id, newest.resources_version AS latest_version, span.versions, newest.names, "
            "span.created_at, newest.created_at AS updated_at "
            "FROM (SELECT DISTINCT ON (resources_id) resources_id, resources_version, names, created_at "
            "      FROM resources ORDER BY resources_id, resources_version DESC) AS newest "
            "JOIN (SELECT resources_id, count(*) AS versions, min(created_at) AS created_at "
            "      FROM resources GROUP BY resources_id) AS span USING (resources_id) "
            "ORDER BY newest.resources_id LIMIT %s OFFSET %s",
            (limit, offset),
        )
        return await rows.fetchall(), int(total_row[0]) if total_row else 0


async def latest_resources(conn: AsyncConnection[Any]) -> ResourcesVersion | None:
    """The most recently published version of any id: greatest ``(created_at, resources_id, resources_version)``."""
    async with conn.cursor(row_factory=class_row(ResourcesVersion)) as cur:
        await cur.execute(
            f"SELECT {_VERSION_COLS} FROM resources "  # noqa: S608 - a constant column list
            "ORDER BY created_at DESC, resources_id DESC, resources_version DESC LIMIT 1"
        )
        return await cur.fetchone()


async def get_resources(
    conn: AsyncConnection[Any], resources_id: str, version: int | None = None
) -> ResourcesVersion | None:
    """Version ``version`` of ``resources_id``, or its highest version when ``version`` is ``None``."""
    async with conn.cursor(row_factory=class_row(ResourcesVersion)) as cur:
        await cur.execute(
            f"SELECT {_VERSION_COLS} FROM resources "  # noqa: S608 - a constant column list
            "WHERE resources_id = %s AND (%s::integer IS NULL OR resources_version = %s) "
            "ORDER BY resources_version DESC LIMIT 1",
            (resources_id, version, version),
        )
        return await cur.fetchone()


PROJECTION = Projection(
    name="resources",
    version=1,
    topics=(RESOURCES,),
    event_types=frozenset({ResourcesPublished}),
    migrations=tuple(load_package_migrations("projections", "sql/resources")),
    apply=apply,
    tables=("resources",),
    idempotent_types=frozenset({ResourcesPublished}),
    description="every version of every resources_id (GET /v1/resources)",
)
