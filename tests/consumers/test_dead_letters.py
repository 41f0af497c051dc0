"""Poison records among good ones: all parked, the rest applied, the partition keeps flowing; replay."""

from __future__ import annotations

import pytest

from consumers.worker import ProjectionWorker
from projections.dead_letters import list_dead_letters, replay
from projections.rollouts import PROJECTION as ROLLOUTS_PROJECTION
from projections.tracking import active_generation
from schemas import RolloutEnqueued, encode
from schemas.topics import ROLLOUTS
from tests.consumers import ledger
from tests.consumers.helpers import at, fetch_all, lifecycle, publish, publish_raw, running, wait_for_total

pytestmark = [pytest.mark.kafka, pytest.mark.pg]


async def test_poison_records_are_parked_and_the_rest_applied(kafka_bootstrap, kafka_topics, pg_url, pg_conn):
    topic = ROLLOUTS.full_name(kafka_topics)
    await publish(kafka_bootstrap, kafka_topics, lifecycle(1))
    # Not JSON; an unknown type; a known type with a missing field; and one that apply rejects.
    await publish_raw(kafka_bootstrap, topic, b"\x00garbage", key=b"ro-bad-1")
    await publish_raw(kafka_bootstrap, topic, b'{"type": "rollout.teleported", "rollout_id": "x"}', key=b"ro-bad-2")
    await publish_raw(kafka_bootstrap, topic, b'{"type": "rollout.enqueued", "version": 1}', key=b"ro-bad-3")
    poison = RolloutEnqueued(rollout_id="ro-poison", input="poison", occurred_at=at(0))
    await publish(kafka_bootstrap, kafka_topics, [poison])
    # Per-key ordering: the poison's later events are parked behind it; other keys keep flowing.
    await publish(kafka_bootstrap, kafka_topics, [RolloutEnqueued(rollout_id="ro-poison", input=2, occurred_at=at(1))])
    await publish(kafka_bootstrap, kafka_topics, lifecycle(2))
    total = 4 + 3 + 1 + 1 + 4
    async with running(ProjectionWorker(
        ledger.REJECTING, bootstrap=kafka_bootstrap, database_url=pg_url, topic_prefix=kafka_topics, batch_size=50,
        use_group=False,
    )):  # fmt: skip
        await wait_for_total(pg_url, "rejecting_g1", total)
    statuses = await fetch_all(pg_url, "SELECT rollout_id, status FROM rejecting_g1.rollouts ORDER BY 1")
    assert statuses == [("ro-00001", "succeeded"), ("ro-00002", "succeeded")]
    letters = await list_dead_letters(pg_conn, "rejecting")
    assert sorted((d.reason, bytes(d.key or b"")) for d in letters) == [
        ("apply", b"ro-poison"), ("blocked", b"ro-poison"), ("decode", b"ro-bad-1"), ("decode", b"ro-bad-3"),
        ("unknown_type", b"ro-bad-2"),
    ]  # fmt: skip
    assert all(d.topic == topic and d.status == "parked" and d.payload for d in letters)

    # Replay through a projection that accepts the event now: both parked events of the key apply, in order.
    gen = await active_generation(pg_conn, "rejecting")
    assert gen is not None
    result = await replay(pg_conn, ledger.PROJECTION, gen, [d.id for d in letters if d.key == b"ro-poison"])
    assert (result.replayed, result.still_parked) == (2, 0)
    rows = await fetch_all(pg_url, "SELECT input FROM rejecting_g1.rollouts WHERE rollout_id = 'ro-poison'")
    assert rows == [("poison",)]  # the first enqueue of an id wins
    # Undecodable records stay parked when replayed, with their error.
    again = await replay(pg_conn, ledger.PROJECTION, gen)
    assert (again.replayed, again.still_parked) == (0, 3)


async def test_a_record_without_envelope_headers_is_decoded_from_its_value(kafka_bootstrap, kafka_topics, pg_url):
    event = lifecycle(5)[0]
    value, _ = encode(event)
    await publish_raw(kafka_bootstrap, ROLLOUTS.full_name(kafka_topics), value, key=event.key())
    async with running(ProjectionWorker(
        ledger.PROJECTION, bootstrap=kafka_bootstrap, database_url=pg_url, topic_prefix=kafka_topics, use_group=False
    )):  # fmt: skip
        await wait_for_total(pg_url, "ledger_g1", 1)
    assert await fetch_all(pg_url, "SELECT rollout_id, status FROM ledger_g1.rollouts") == [("ro-00005", "queuing")]


async def test_a_value_a_column_cannot_hold_parks_its_event(kafka_bootstrap, kafka_topics, pg_url, pg_conn):
    # priority is an int4 column: PostgreSQL refuses 2**40 (nothing truncates it), and only that event is parked.
    big = RolloutEnqueued(rollout_id="ro-big", input=1, priority=2**40, occurred_at=at(0))
    await publish(kafka_bootstrap, kafka_topics, [*lifecycle(1), big, *lifecycle(2)])
    async with running(ProjectionWorker(
        ROLLOUTS_PROJECTION, bootstrap=kafka_bootstrap, database_url=pg_url, topic_prefix=kafka_topics, use_group=False
    )):  # fmt: skip
        await wait_for_total(pg_url, "rollouts_g1", 9)
    rows = await fetch_all(pg_url, "SELECT rollout_id, status, priority FROM rollouts_g1.rollouts ORDER BY 1")
    assert rows == [("ro-00001", "succeeded", 0), ("ro-00002", "succeeded", 0)]
    (letter,) = await list_dead_letters(pg_conn, "rollouts")
    assert (letter.reason, letter.key, letter.event_type) == ("apply", b"ro-big", "rollout.enqueued")
    assert "out of range" in letter.error
