"""The event archive through the engine: every record of every event topic, decodable or not, none parked."""

from __future__ import annotations

import pytest

from consumers.worker import ProjectionWorker
from projections.archive import PROJECTION as ARCHIVE
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
