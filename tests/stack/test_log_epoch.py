"""A reset broker log is recognised before stored positions are trusted."""

from __future__ import annotations

import pytest

from agl.errors import LogResetError
from agl.stack.log_epoch import EpochOutcome, ensure_log_epoch, read_log_epoch, reconcile_log_epoch
from producers.admin import ensure_topics
from schemas.topics import META

pytestmark = [pytest.mark.kafka, pytest.mark.pg]


async def test_epoch_is_written_once_and_read_back(kafka_bootstrap, topic_prefix):
    await ensure_topics(kafka_bootstrap, [META], prefix=topic_prefix)
    topic = META.full_name(topic_prefix)
    assert await read_log_epoch(kafka_bootstrap, topic) is None
    first = await ensure_log_epoch(kafka_bootstrap, topic)
    assert await ensure_log_epoch(kafka_bootstrap, topic) == first


async def test_a_new_epoch_with_stored_positions_is_refused(pg_conn):
    assert await reconcile_log_epoch(pg_conn, "epoch-a") is EpochOutcome.ADOPTED
    assert await reconcile_log_epoch(pg_conn, "epoch-a") is EpochOutcome.SAME
    await pg_conn.execute(
        "INSERT INTO projection_offsets (projection, topic, partition, next_offset) VALUES ('p', 't', 0, 42)"
    )
    with pytest.raises(LogResetError, match="was reset"):
        await reconcile_log_epoch(pg_conn, "epoch-b")
    # Refusing changed nothing: the positions and the old epoch are still there.
    cur = await pg_conn.execute("SELECT next_offset FROM projection_offsets")
    assert await cur.fetchall() == [(42,)]
    assert await reconcile_log_epoch(pg_conn, "epoch-b", accept_reset=True) is EpochOutcome.RESET_ACCEPTED
    cur = await pg_conn.execute("SELECT count(*) FROM projection_offsets")
    assert (await cur.fetchone())[0] == 0
    assert await reconcile_log_epoch(pg_conn, "epoch-b") is EpochOutcome.SAME


async def test_a_new_epoch_without_positions_is_adopted(pg_conn):
    await reconcile_log_epoch(pg_conn, "epoch-a")
    assert await reconcile_log_epoch(pg_conn, "epoch-b") is EpochOutcome.ADOPTED
