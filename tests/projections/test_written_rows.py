"""Rows kept in memory after a write: trusted only while PostgreSQL still holds the version written."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from projections import rollouts
from projections.base import Envelope
from projections.tracking import ensure_active_generation, set_search_path
from projections.written_rows import WrittenRows
from schemas import AttemptStarted, Event, RolloutEnqueued
from tests.consumers.helpers import at, lifecycle


def test_an_entry_is_handed_out_once_and_only_for_the_xmin_it_was_written_as():
    written: WrittenRows[str] = WrittenRows(capacity=10)
    written.put("s", xmin=7, xid_now=7, values={"a": "A", "b": "B"})
    assert written.take("s", ["a", "b"], {"a": 7, "b": 8}, xid_now=9) == {"a": "A"}  # b was rewritten since
    assert written.take("s", ["a", "b"], {"a": 7, "b": 7}, xid_now=9) == {}  # taken out: a batch owns them now
    written.put("s", xmin=9, xid_now=9, values={"a": "A2"})
    assert written.take("other", ["a"], {"a": 9}, xid_now=9) == {}  # another generation's schema
    assert written.take("s", ["a"], {}, xid_now=9) == {}  # the row is gone (a rolled-back insert)


def test_old_entries_are_dropped_beyond_capacity_and_beyond_the_xid_horizon():
    written: WrittenRows[int] = WrittenRows(capacity=2)
    written.put("s", xmin=1, xid_now=1, values={"a": 1, "b": 2, "c": 3})
    assert len(written) == 2
    assert written.take("s", ["a", "b", "c"], {"a": 1, "b": 1, "c": 1}, xid_now=2) == {"b": 2, "c": 3}
    written.put("s", xmin=5, xid_now=5, values={"a": 1})
    # 2**31 transactions later a 32-bit xmin may have been reused by someone else's write.
    assert written.take("s", ["a"], {"a": 5}, xid_now=5 + 2**31) == {}


def envelopes(events: list[Event]) -> list[Envelope]:
    return [Envelope("t", 0, i, e.key(), 0, e) for i, e in enumerate(events)]


async def apply(conn: psycopg.AsyncConnection[Any], events: list[Event]) -> None:
    async with conn.transaction():
        await set_search_path(conn, "rollouts_g1", local=True)
        async with conn.transaction():  # the engine applies in a savepoint
            await rollouts.apply(envelopes(events), conn)


@pytest.mark.pg
async def test_a_row_another_writer_changed_is_read_again_not_taken_from_memory(pg_url):
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        await ensure_active_generation(conn, rollouts.PROJECTION)
        first = lifecycle(1)
        await apply(conn, first[:2])
        # Another writer (a second instance, a dead-letter replay) rewrites the row between two batches.
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as other:
            await other.execute("UPDATE rollouts_g1.rollouts SET input = '\"changed\"' WHERE rollout_id = 'ro-00001'")
        await apply(conn, first[2:])
        # A row of this connection's own last write is taken from memory, and the result is the same as a load.
        await apply(conn, [RolloutEnqueued(rollout_id="ro-00001", input="ignored: the first enqueue wins")])
        cur = await conn.execute("SELECT input, status FROM rollouts_g1.rollouts WHERE rollout_id = 'ro-00001'")
        assert await cur.fetchall() == [("changed", "succeeded")]
        written = rollouts.written_rows(conn)
        assert (written.hits, written.misses) == (1, 2)


@pytest.mark.pg
async def test_a_rolled_back_batch_leaves_nothing_in_memory(pg_url):
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        await ensure_active_generation(conn, rollouts.PROJECTION)
        await apply(conn, lifecycle(1)[:1])
        start = AttemptStarted(rollout_id="ro-00001", attempt_id="at-1", sequence_id=1, occurred_at=at(1))
        with pytest.raises(RuntimeError):
            async with conn.transaction():
                await set_search_path(conn, "rollouts_g1", local=True)
                await rollouts.apply(envelopes([start]), conn)
                raise RuntimeError("the batch fails after apply, e.g. storing its positions")
        await apply(conn, [RolloutEnqueued(rollout_id="ro-00001", input=2)])
        cur = await conn.execute("SELECT status, attempt_count FROM rollouts_g1.rollouts")
        assert await cur.fetchall() == [("queuing", 0)]  # the rolled-back attempt is not carried over
