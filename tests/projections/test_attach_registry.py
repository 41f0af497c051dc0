"""The registry of attached projections in PostgreSQL: attach, attach again, detach, drop, and what status reports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from consumers.status import gather_status
from examples.rollouts_per_hour import PROJECTION as PER_HOUR
from projections.attached import (
    AttachConflict,
    attach,
    detach,
    drop_tables,
    generations,
    get_attached,
    import_root,
    list_attached,
    mark_stopped,
)
from projections.errors import UnknownProjection
from projections.registry import load_attached
from projections.rollouts import PROJECTION as ROLLOUTS
from projections.tracking import ensure_active_generation

pytestmark = pytest.mark.pg
REFERENCE = "examples.rollouts_per_hour:PROJECTION"
ROOT = str(Path(__file__).resolve().parents[2])


async def schemas(conn: Any, name: str) -> list[str]:
    cur = await conn.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE %s ORDER BY 1", (f"{name}_g%",))
    return [row[0] for row in await cur.fetchall()]


def test_the_import_root_is_the_directory_a_worker_imports_the_module_from():
    assert import_root(PER_HOUR, REFERENCE) == ROOT
    assert load_attached(REFERENCE, ROOT) is PER_HOUR


async def test_attach_registers_once_and_attaching_again_bumps_the_revision(pg_conn):
    first = await attach(pg_conn, PER_HOUR, REFERENCE, ROOT)
    assert (first.name, first.reference, first.python_path, first.revision) == ("rollouts_per_hour", REFERENCE, ROOT, 1)
    assert first.attached and first.stopped_at is None
    again = await attach(pg_conn, PER_HOUR, REFERENCE, ROOT)
    assert again.revision == 2, "the supervisor restarts the worker on the current code"
    assert [a.name for a in await list_attached(pg_conn)] == ["rollouts_per_hour"]


async def test_a_builtin_name_or_another_reference_under_an_attached_name_is_refused(pg_conn):
    with pytest.raises(AttachConflict, match="built-in"):
        await attach(pg_conn, ROLLOUTS, "projections.rollouts:PROJECTION")
    await attach(pg_conn, PER_HOUR, REFERENCE)
    with pytest.raises(AttachConflict, match=r"already attached as examples\.rollouts_per_hour:PROJECTION"):
        await attach(pg_conn, PER_HOUR, "elsewhere.module:PROJECTION")
    kept = await get_attached(pg_conn, "rollouts_per_hour")
    assert kept is not None and kept.reference == REFERENCE
    with pytest.raises(UnknownProjection, match="built-in"):
        await detach(pg_conn, "rollouts")
    with pytest.raises(UnknownProjection):
        await detach(pg_conn, "never_attached")


async def test_detach_keeps_the_tables_and_attaching_again_resumes_them(pg_conn):
    await attach(pg_conn, PER_HOUR, REFERENCE)
    gen = await ensure_active_generation(pg_conn, PER_HOUR)  # what the worker does when it starts
    assert gen.schema == "rollouts_per_hour_g1"
    await pg_conn.execute("INSERT INTO rollouts_per_hour_g1.rollouts_per_hour VALUES (now(), 'train', 3)")
    detached = await detach(pg_conn, "rollouts_per_hour")
    assert not detached.attached and detached.stopped_at is None
    assert await list_attached(pg_conn) == []
    assert [a.name for a in await list_attached(pg_conn, include_detached=True)] == ["rollouts_per_hour"]
    again = await attach(pg_conn, PER_HOUR, REFERENCE)
    assert again.attached and again.revision == 2
    assert await ensure_active_generation(pg_conn, PER_HOUR) == gen, "same generation: it resumes where it stood"
    cur = await pg_conn.execute("SELECT rollouts FROM rollouts_per_hour_g1.rollouts_per_hour")
    assert await cur.fetchall() == [(3,)]


async def test_the_tables_of_an_attached_projection_are_never_dropped(pg_conn):
    await attach(pg_conn, PER_HOUR, REFERENCE)
    await ensure_active_generation(pg_conn, PER_HOUR)
    with pytest.raises(AttachConflict, match="detach it before"):
        await drop_tables(pg_conn, "rollouts_per_hour")
    assert await schemas(pg_conn, "rollouts_per_hour") == ["rollouts_per_hour_g1"]


async def test_drop_removes_every_generation_its_positions_dead_letters_and_the_row(pg_conn):
    await attach(pg_conn, PER_HOUR, REFERENCE)
    gen = await ensure_active_generation(pg_conn, PER_HOUR)
    await pg_conn.execute(
        "INSERT INTO projection_offsets (projection, topic, partition, next_offset) "
        "VALUES (%s, 'agl.rollouts.v1', 0, 5)",
        (gen.schema,),
    )
    await detach(pg_conn, "rollouts_per_hour")
    await mark_stopped(pg_conn, "rollouts_per_hour")
    stopped = await get_attached(pg_conn, "rollouts_per_hour")
    assert stopped is not None and stopped.stopped_at is not None
    dropped = await drop_tables(pg_conn, "rollouts_per_hour")
    assert [g.schema for g in dropped] == ["rollouts_per_hour_g1"]
    assert await schemas(pg_conn, "rollouts_per_hour") == []
    assert await generations(pg_conn, "rollouts_per_hour") == []
    cur = await pg_conn.execute("SELECT count(*) FROM projection_offsets WHERE projection = %s", (gen.schema,))
    assert await cur.fetchone() == (0,)
    assert await get_attached(pg_conn, "rollouts_per_hour") is None
    with pytest.raises(UnknownProjection):
        await drop_tables(pg_conn, "rollouts_per_hour")


async def test_a_detached_projection_is_not_reported_by_status_so_it_never_reads_as_stalled(pg_conn):
    await attach(pg_conn, PER_HOUR, REFERENCE)
    await ensure_active_generation(pg_conn, PER_HOUR)
    # No position rows yet: gather_status asks the broker nothing, so no broker address is needed.
    assert [s.name for s in await gather_status(pg_conn, "unused:9092")] == ["rollouts_per_hour"]
    await detach(pg_conn, "rollouts_per_hour")
    assert await gather_status(pg_conn, "unused:9092") == []
