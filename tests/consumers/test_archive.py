"""The event archive through the engine: every record of every event topic, decodable or not, none parked."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from consumers.worker import ProjectionWorker
from projections.archive import PROJECTION as ARCHIVE
from projections.safe_text import decode_headers
from schemas.topics import ROLLOUTS
from tests.consumers.helpers import fetch_all, lifecycle, publish, publish_raw, running, wait_for_total

pytestmark = [pytest.mark.kafka, pytest.mark.pg]


async def test_every_record_is_archived_with_its_position_and_nothing_is_parked(kafka_bootstrap, kafka_topics, pg_url):
    events = lifecycle(1) + lifecycle(2)
    await publish(kafka_bootstrap, kafka_topics, events)
    await publish_raw(kafka_bootstrap, ROLLOUTS.full_name(kafka_topics), b"\x00not json", key=b"ro-bad")
    worker = ProjectionWorker(
        ARCHIVE, bootstrap=kafka_bootstrap, database_url=pg_url, topic_prefix=kafka_topics, use_group=False
    )
    async with running(worker):
        await wait_for_total(pg_url, "archive_g1", len(events) + 1)
    rows = await fetch_all(pg_url, "SELECT event_id::text, type, payload IS NULL FROM archive_g1.events")
    archived = {(event_id, kind, no_payload) for event_id, kind, no_payload in rows}
    assert archived == {(str(e.event_id), e.type, False) for e in events} | {(None, None, True)}
    assert await fetch_all(pg_url, "SELECT count(*) FROM dead_letters") == [(0,)]
    # The rows go in as binary COPY: the payload is the value's JSON, the time the broker's (this minute's).
    now = datetime.now(UTC)
    for value, payload, at in await fetch_all(pg_url, "SELECT value, payload, timestamp FROM archive_g1.events"):
        assert payload == (None if value.startswith(b"\x00") else orjson.loads(value))
        assert abs(at - now) < timedelta(minutes=5)


async def test_a_record_jsonb_and_text_columns_refuse_is_archived_byte_for_byte(kafka_bootstrap, kafka_topics, pg_url):
    # Valid JSON that jsonb refuses (NUL), headers with NUL in names and values, a version beyond int4: no gap.
    value = b'{"type": "rollout.enqueued", "input": "\\u0000"}'
    headers = [("ce_type", b"rollout.\x00enqueued"), ("event_version", b"99999999999"), ("x-\x00", b"\x00")]
    await publish_raw(kafka_bootstrap, ROLLOUTS.full_name(kafka_topics), value, key=b"ro-\x00", headers=headers)
    await publish(kafka_bootstrap, kafka_topics, lifecycle(1))
    worker = ProjectionWorker(
        ARCHIVE, bootstrap=kafka_bootstrap, database_url=pg_url, topic_prefix=kafka_topics, use_group=False
    )
    async with running(worker):
        await wait_for_total(pg_url, "archive_g1", 5)
    assert await fetch_all(pg_url, "SELECT count(*) FROM dead_letters") == [(0,)]
    (row,) = await fetch_all(
        pg_url,
        "SELECT key, value, payload, type, version, headers FROM archive_g1.events WHERE key = %s",
        (b"ro-\x00",),
    )
    assert row[:5] == (b"ro-\x00", value, None, "rollout.\ufffdenqueued", None)
    assert decode_headers(row[5]) == headers
