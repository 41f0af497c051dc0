"""Restoring a reset log from the archive: every topic checked against every witness, nothing dropped in silence,
a partial restore resumed, and the archive never deleted (also not by ``--accept-log-reset``)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from agl.errors import LogResetError
from agl.stack.archive_settle import settle_archive
from agl.stack.log_epoch import EpochOutcome, reconcile_log_epoch
from agl.stack.restore import restore_from_archive
from consumers.worker import ProjectionWorker
from producers.admin import ensure_topics
from projections.archive import PROJECTION as ARCHIVE
from projections.migrations import load_package_migrations, migrate
from projections.safe_text import decode_headers
from schemas.topics import META, ROLLOUTS, SPANS, TOPICS
from tests.consumers.helpers import fetch_all, lifecycle, publish, publish_raw, running, wait_for_total

pytestmark = [pytest.mark.kafka, pytest.mark.pg]

NUL_VALUE = b'{"type": "span.recorded", "name": "\\u0000"}'


def event_topics(prefix: str) -> list[str]:
    return [t.full_name(prefix) for t in TOPICS if t is not META]


async def archive_a_log(kafka_bootstrap: str, old: str, pg_url: str) -> int:
    """Publish events (and a NUL payload) under the ``old`` prefix and archive them; returns how many."""
    events = [e for i in range(1, 7) for e in lifecycle(i)]
    await publish(kafka_bootstrap, old, events)
    await publish_raw(kafka_bootstrap, SPANS.full_name(old), NUL_VALUE, key=b"ro-00001", headers=[("x\x00", b"\x00")])
    worker = ProjectionWorker(
        ARCHIVE, bootstrap=kafka_bootstrap, database_url=pg_url, topic_prefix=old, use_group=False
    )
    async with running(worker):
        await wait_for_total(pg_url, "archive_g1", len(events) + 1)
    return len(events) + 1


async def reset_to(conn, old: str, new: str) -> None:
    """The broker forgot the log: the archive and the positions now name the empty topics of ``new``."""
    for table in ("archive_g1.events", "projection_offsets"):
        await conn.execute(f"UPDATE {table} SET topic = %s || substr(topic, %s)", (new, len(old) + 1))  # noqa: S608
    await conn.execute("INSERT INTO stack_state (key, value) VALUES ('log_epoch', '\"epoch-1\"')")


async def read_log(bootstrap: str, topics: list[str], total: int) -> list[tuple[Any, ...]]:
    async with AIOKafkaProducer(bootstrap_servers=bootstrap) as producer:
        tps = [TopicPartition(t, p) for t in topics for p in await producer.partitions_for(t)]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        out: list[tuple[Any, ...]] = []
        for _ in range(50 if total else 5):
            for records in (await consumer.getmany(timeout_ms=200)).values():
                out += [(r.topic, r.partition, r.offset, r.key, r.value, list(r.headers)) for r in records]
            if total and len(out) >= total:
                break
        return sorted(out)
    finally:
        await consumer.stop()


async def archived_rows(pg_url: str) -> list[tuple[Any, ...]]:
    rows = await fetch_all(pg_url, 'SELECT topic, partition, "offset", key, value, headers FROM archive_g1.events')
    return sorted((t, p, o, k, v, decode_headers(h)) for t, p, o, k, v, h in rows)


async def test_a_lagging_archive_is_reported_then_restored_around_a_partial_restore_and_kept(
    kafka_bootstrap, kafka_topics, topic_prefix, pg_url, pg_conn
):
    total = await archive_a_log(kafka_bootstrap, kafka_topics, pg_url)
    new = f"{topic_prefix}r."
    await ensure_topics(kafka_bootstrap, TOPICS, prefix=new)
    await reset_to(pg_conn, kafka_topics, new)
    rollouts0 = (ROLLOUTS.full_name(new), 0)
    (archived0,) = await fetch_all(
        pg_url, "SELECT count(*) FROM archive_g1.events WHERE topic = %s AND partition = %s", rollouts0
    )
    # Witnesses of records the archive never got: a read model that applied two more, and the command API, which
    # had a record confirmed on a topic no read model reads.
    await pg_conn.execute("CREATE SCHEMA rollouts_g1")
    await pg_conn.execute(
        "INSERT INTO projection_generations (projection, generation, schema_name, version, state) "
        "VALUES ('rollouts', 1, 'rollouts_g1', 1, 'active')"
    )
    await pg_conn.execute(
        "INSERT INTO projection_offsets (projection, topic, partition, next_offset) VALUES ('rollouts_g1', %s, %s, %s)",
        (*rollouts0, archived0[0] + 2),
    )
    await migrate(pg_conn, "commands", load_package_migrations("producers"))
    await pg_conn.execute(
        'INSERT INTO command_rollouts (rollout_id, request_hash, event, topic, "partition", "offset") '
        "VALUES ('ro-x', 'h', '{}', %s, 3, 4)",
        (SPANS.full_name(new),),
    )

    with pytest.raises(LogResetError) as refused:
        await restore_from_archive(pg_conn, kafka_bootstrap, event_topics(new))
    text = str(refused.value)
    assert f"{rollouts0[0]}[0] records {archived0[0]}..{archived0[0] + 1}" in text, text
    assert f"{SPANS.full_name(new)}[3] records 0..4 (5, seen by the command API" in text, text
    assert "never deletes it" in text and "start the read models over with" not in text.lower()
    assert await read_log(kafka_bootstrap, event_topics(new), 0) == [], "a refusal restores nothing"

    # A restore cut short: the first two records of one partition are in the broker already.
    rows = await archived_rows(pg_url)
    first = [r for r in rows if (r[0], r[1]) == rollouts0][:2]
    async with AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all") as producer:
        for topic, partition, _, key, value, headers in first:
            await producer.send_and_wait(topic, value, key=key, partition=partition, headers=headers)

    report = await restore_from_archive(pg_conn, kafka_bootstrap, event_topics(new), accept_loss=True)
    assert report is not None
    assert report.resumed == {rollouts0: 2}
    assert report.records == total - 2
    assert {(m.topic, m.partition) for m in report.lost} == {rollouts0, (SPANS.full_name(new), 3)}
    assert report.started_over == ["rollouts_g1"], "the read model that applied lost records starts over"
    assert await read_log(kafka_bootstrap, event_topics(new), total) == rows, "every record, exactly, once"
    assert await fetch_all(pg_url, "SELECT count(*) FROM archive_g1.events") == [(total,)]
    # The loss is accepted: the next restore (of the same archive) does not report it again.
    assert await fetch_all(pg_url, "SELECT to_regclass('rollouts_g1.rollouts') IS NULL") == [(True,)]


async def test_accepting_a_new_log_keeps_the_archive(kafka_bootstrap, kafka_topics, pg_url, pg_conn):
    total = await archive_a_log(kafka_bootstrap, kafka_topics, pg_url)
    await pg_conn.execute("INSERT INTO stack_state (key, value) VALUES ('log_epoch', '\"epoch-1\"')")
    with pytest.raises(LogResetError) as refused:
        await reconcile_log_epoch(pg_conn, "epoch-2")
    assert "keeps the event archive" in str(refused.value)
    assert await reconcile_log_epoch(pg_conn, "epoch-2", accept_reset=True) is EpochOutcome.RESET_ACCEPTED
    # The archive of the old log is retired, never dropped; the positions of the old log are gone.
    assert await fetch_all(pg_url, "SELECT count(*) FROM archive_g1.events") == [(total,)]
    assert await fetch_all(pg_url, "SELECT state FROM projection_generations WHERE projection = 'archive'") == [
        ("retired",)
    ]
    assert await fetch_all(pg_url, "SELECT count(*) FROM projection_offsets") == [(0,)]
    # The archive worker starts a new generation for the new log.
    worker = ProjectionWorker(
        ARCHIVE, bootstrap=kafka_bootstrap, database_url=pg_url, topic_prefix=kafka_topics, use_group=False
    )
    async with running(worker):
        await wait_for_total(pg_url, "archive_g2", total)


async def test_settling_waits_for_the_archive_and_records_the_high_watermarks(
    kafka_bootstrap, kafka_topics, pg_url, pg_conn
):
    await pg_conn.execute("INSERT INTO stack_state (key, value) VALUES ('log_epoch', '\"epoch-1\"')")
    events = [e for i in range(1, 41) for e in lifecycle(i)]
    worker = ProjectionWorker(
        ARCHIVE, bootstrap=kafka_bootstrap, database_url=pg_url, topic_prefix=kafka_topics, use_group=False
    )
    async with running(worker):
        await publish(kafka_bootstrap, kafka_topics, events)
        # Right after the last write the archive lags; settling returns once it holds every record.
        settled = await settle_archive(pg_conn, kafka_bootstrap, event_topics(kafka_topics), timeout_s=60)
        assert settled.caught_up and not settled.behind
        assert await fetch_all(pg_url, "SELECT count(*) FROM archive_g1.events") == [(len(events),)]
    (marks,) = await fetch_all(pg_url, "SELECT value FROM stack_state WHERE key = 'archive_watermarks'")
    assert marks[0]["epoch"] == "epoch-1" and sum(n for _, _, n in marks[0]["marks"]) == len(events)
    # With the archive stopped, settling gives up at once and names what the archive lacks.
    late = lifecycle(99)
    await publish(kafka_bootstrap, kafka_topics, late)
    settled = await asyncio.wait_for(
        settle_archive(pg_conn, kafka_bootstrap, event_topics(kafka_topics), archive_running=lambda: False), 30
    )
    assert not settled.caught_up and sum(mark - have for have, mark in settled.behind.values()) == len(late)
