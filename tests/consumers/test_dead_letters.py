"""Poison records among good ones: all parked, the rest applied, the partition keeps flowing; replay."""

from __future__ import annotations

from uuid import UUID

import pytest

from consumers.worker import ProjectionWorker
from projections.base import Projection
from projections.dead_letters import DeadLetterNotFound, discard, get_dead_letter, list_dead_letters, replay
from projections.migrations import Migration
from projections.rollouts import PROJECTION as ROLLOUTS_PROJECTION
from projections.tracking import active_generation
from schemas import AttemptStarted, RolloutEnqueued, RolloutRequeued, SpanRecorded, encode
from schemas.topics import ATTEMPTS, ROLLOUTS, SPANS
from tests.consumers import ledger
from tests.consumers.helpers import fetch_all, lifecycle, publish, publish_raw, running, wait_for_total
from tests.fixtures.events import make_spans
from tests.fixtures.histories import at

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
    # The event schema bounds it too, so only a foreign producer can write it: the record is written raw.
    value, headers = encode(RolloutEnqueued(rollout_id="ro-big", input=1, priority=7, occurred_at=at(0)))
    assert b'"priority":7' in value
    before, after = lifecycle(1), lifecycle(2)
    await publish(kafka_bootstrap, kafka_topics, before)
    await publish_raw(
        kafka_bootstrap, ROLLOUTS.full_name(kafka_topics), value.replace(b'"priority":7', b'"priority":1099511627776'),
        key=b"ro-big", headers=headers,
    )  # fmt: skip
    await publish(kafka_bootstrap, kafka_topics, after)
    async with running(ProjectionWorker(
        ROLLOUTS_PROJECTION, bootstrap=kafka_bootstrap, database_url=pg_url, topic_prefix=kafka_topics, use_group=False
    )):  # fmt: skip
        await wait_for_total(pg_url, "rollouts_g1", len(before) + 1 + len(after))
    rows = await fetch_all(pg_url, "SELECT rollout_id, status, priority FROM rollouts_g1.rollouts ORDER BY 1")
    assert rows == [("ro-00001", "succeeded", 0), ("ro-00002", "succeeded", 0)]
    (letter,) = await list_dead_letters(pg_conn, "rollouts")
    assert (letter.key, letter.event_type) == (b"ro-big", "rollout.enqueued")
    # The schema's bound refuses it before PostgreSQL would: a decode error naming the field.
    assert letter.reason == "decode" and "priority" in letter.error


# -- a record's own bytes never stop the worker -------------------------------------------------------------------
NUL_HEADERS = [
    ("ce_type", b"rollout.\x00enqueued"), ("ce_id", b"\x00"), ("x-\x00name", b"\x00\xff"), ("event_version", b"1\x00"),
]  # fmt: skip
NUL_VALUE = b'{"type": "rollout.enqueued", "rollout_id": "ro-\\u0000", "input": "\\u0000"}'


async def test_a_record_with_nul_bytes_everywhere_is_parked_and_the_worker_stays_up(
    kafka_bootstrap, kafka_topics, pg_url, pg_conn
):
    topic = ROLLOUTS.full_name(kafka_topics)
    before, after = lifecycle(1), lifecycle(2)
    await publish(kafka_bootstrap, kafka_topics, before)
    await publish_raw(kafka_bootstrap, topic, NUL_VALUE, key=b"ro-\x00nul", headers=NUL_HEADERS)
    await publish(kafka_bootstrap, kafka_topics, after)
    async with running(ProjectionWorker(
        ROLLOUTS_PROJECTION, bootstrap=kafka_bootstrap, database_url=pg_url, topic_prefix=kafka_topics,
        use_group=False,
    )):  # fmt: skip
        # Parking must not fail on the record: the worker gets past it and applies what follows.
        await wait_for_total(pg_url, "rollouts_g1", len(before) + 1 + len(after))
    rows = await fetch_all(pg_url, "SELECT rollout_id, status FROM rollouts_g1.rollouts ORDER BY 1")
    assert rows == [("ro-00001", "succeeded"), ("ro-00002", "succeeded")]
    (letter,) = await list_dead_letters(pg_conn, "rollouts")
    assert (letter.key, letter.payload) == (b"ro-\x00nul", NUL_VALUE), "key and value are kept byte for byte"
    assert list(letter.header_pairs()) == NUL_HEADERS, "headers are kept exactly, names with NUL included"
    assert letter.event_type == "rollout.\ufffdenqueued" and "\x00" not in letter.error


# -- replay in park order, discard, and the event-id ledger ---------------------------------------------------------
REJECT: set[UUID] = set()
#: One row per applied event, no unique constraint: an event applied twice shows up twice.
APPLIED_SQL = (
    'CREATE TABLE ledger (topic text NOT NULL, partition int NOT NULL, "offset" bigint NOT NULL, event_id uuid)'
)


async def apply_unless_rejected(envelopes, conn) -> None:
    for e in envelopes:
        if e.require_event().event_id in REJECT:
            raise ledger.Poison(f"rejected {e.require_event().event_id}")
    async with conn.cursor() as cur:
        await cur.executemany(
            'INSERT INTO ledger (topic, partition, "offset", event_id) VALUES (%s, %s, %s, %s)',
            [(e.topic, e.partition, e.offset, e.require_event().event_id) for e in envelopes],
        )


#: Events of rollouts and attempts, per-key ordering, the engine's event-id dedupe on for every type.
GUARDED = Projection(
    name="guarded", version=1, topics=(ROLLOUTS, ATTEMPTS), apply=apply_unless_rejected,
    migrations=(Migration(1, "ledger", APPLIED_SQL),), tables=("ledger",), per_key_ordering=True, dedupe=True,
)  # fmt: skip


def _worker(projection, kafka_bootstrap, kafka_topics, pg_url) -> ProjectionWorker:
    return ProjectionWorker(
        projection, bootstrap=kafka_bootstrap, database_url=pg_url, topic_prefix=kafka_topics, use_group=False
    )


async def test_replay_follows_park_order_across_topics_and_discard_unblocks_the_key(
    kafka_bootstrap, kafka_topics, pg_url, pg_conn
):
    enqueued = RolloutEnqueued(rollout_id="ro-1", input=1, occurred_at=at(0))
    started = AttemptStarted(rollout_id="ro-1", attempt_id="at-1", sequence_id=1, occurred_at=at(1))
    REJECT.add(enqueued.event_id)
    # The enqueue (agl.rollouts.v1) is rejected, then its attempt (agl.attempts.v1, a topic that sorts first)
    # parks behind it.
    async with running(_worker(GUARDED, kafka_bootstrap, kafka_topics, pg_url)):
        await publish(kafka_bootstrap, kafka_topics, [enqueued])
        await wait_for_total(pg_url, "guarded_g1", 1)
        await publish(kafka_bootstrap, kafka_topics, [started])
        await wait_for_total(pg_url, "guarded_g1", 2)
    letters = await list_dead_letters(pg_conn, "guarded")
    assert [(d.reason, d.topic) for d in letters] == [
        ("apply", ROLLOUTS.full_name(kafka_topics)), ("blocked", ATTEMPTS.full_name(kafka_topics)),
    ]  # fmt: skip
    gen = await active_generation(pg_conn, "guarded")
    assert gen is not None

    # The enqueue still fails: in park order its attempt stays parked behind it (in topic order it would apply).
    result = await replay(pg_conn, GUARDED, gen)
    assert (result.replayed, result.still_parked) == (0, 2)
    assert await fetch_all(pg_url, "SELECT count(*) FROM guarded_g1.ledger") == [(0,)]

    # One bad event must not block its key for ever: discard it, with who and why, then the rest replays.
    done = await discard(pg_conn, letters[0].id, reason="bad input from a test", by="tester")
    assert done.same_key_parked == 1
    closed = await get_dead_letter(pg_conn, letters[0].id)
    assert closed is not None
    assert (closed.status, closed.resolved_by, closed.resolution) == ("discarded", "tester", "bad input from a test")
    assert closed.resolved_at is not None
    listed = await list_dead_letters(pg_conn, "guarded", status=None)
    assert [(d.id, d.status) for d in listed] == [(letters[0].id, "discarded"), (letters[1].id, "parked")]
    with pytest.raises(DeadLetterNotFound, match="discarded"):
        await discard(pg_conn, letters[0].id, reason="again", by="tester")
    assert (await replay(pg_conn, GUARDED, gen)).replayed == 1
    assert await fetch_all(pg_url, "SELECT event_id FROM guarded_g1.ledger") == [(started.event_id,)]


async def test_replay_goes_through_the_event_id_ledger_both_ways(kafka_bootstrap, kafka_topics, pg_url, pg_conn):
    enqueued = RolloutEnqueued(rollout_id="ro-2", input=2, occurred_at=at(0))
    requeued = RolloutRequeued(rollout_id="ro-2", after_attempt_id="at-x", occurred_at=at(1))  # not idempotent
    REJECT.add(enqueued.event_id)
    # The requeue and a re-published copy of it both park behind the rejected enqueue.
    async with running(_worker(GUARDED, kafka_bootstrap, kafka_topics, pg_url)):
        for total, event in enumerate((enqueued, requeued, requeued), start=1):
            await publish(kafka_bootstrap, kafka_topics, [event])
            await wait_for_total(pg_url, "guarded_g1", total)
    assert len(await list_dead_letters(pg_conn, "guarded")) == 3
    REJECT.discard(enqueued.event_id)
    gen = await active_generation(pg_conn, "guarded")
    assert gen is not None
    result = await replay(pg_conn, GUARDED, gen)
    # The enqueue applies (parking it by apply took its id out of the ledger again), the requeue applies once,
    # and its copy is closed without being applied.
    assert (result.replayed, result.already_applied, result.still_parked) == (2, 1, 0)
    counts = "SELECT event_id, count(*) FROM guarded_g1.ledger GROUP BY 1 ORDER BY 1"
    assert await fetch_all(pg_url, counts) == [(enqueued.event_id, 1), (requeued.event_id, 1)]
    # A copy published after the replay finds the replayed id in the ledger: it has no effect.
    await publish(kafka_bootstrap, kafka_topics, [requeued])
    async with running(_worker(GUARDED, kafka_bootstrap, kafka_topics, pg_url)):
        await wait_for_total(pg_url, "guarded_g1", 4)
    assert await fetch_all(pg_url, counts) == [(enqueued.event_id, 1), (requeued.event_id, 1)]
    assert await list_dead_letters(pg_conn, "guarded") == []


#: Spans, read as span.recorded (a spans.recorded arrives as its members), every member through the ledger.
def guarded_spans(per_key_ordering: bool) -> Projection:
    return Projection(
        name="guarded_spans", version=1, topics=(SPANS,), apply=apply_unless_rejected,
        event_types=frozenset({SpanRecorded}), migrations=(Migration(1, "ledger", APPLIED_SQL),), tables=("ledger",),
        dedupe=True, per_key_ordering=per_key_ordering,
    )  # fmt: skip


@pytest.mark.parametrize("per_key_ordering", [False, True], ids=["unordered", "per-key"])
async def test_a_parked_member_of_a_spans_recorded_replays_with_what_it_held_back(
    kafka_bootstrap, kafka_topics, pg_url, pg_conn, per_key_ordering
):
    projection = guarded_spans(per_key_ordering)
    batch = make_spans(3, rollout_id="ro-spans")
    first, second, third = (m.event_id for m in batch.members())
    REJECT.add(second)
    async with running(_worker(projection, kafka_bootstrap, kafka_topics, pg_url)):
        await publish(kafka_bootstrap, kafka_topics, [batch])
        await wait_for_total(pg_url, "guarded_spans_g1", 1)
    # The member apply rejects parks the record (one dead letter per record, with that member's id). The member
    # after it is applied, or, with per-key ordering, held back behind it in the same batch.
    (letter,) = await list_dead_letters(pg_conn, "guarded_spans")
    assert (letter.reason, letter.event_id, letter.offset) == ("apply", second, 0)
    ledger_rows = "SELECT event_id, count(*) FROM guarded_spans_g1.ledger GROUP BY 1 ORDER BY 1"
    applied = [first] if per_key_ordering else [first, third]
    assert await fetch_all(pg_url, ledger_rows) == sorted((i, 1) for i in applied)
    # Replayed, the record's members go through the ledger again: what was applied is not applied twice, and what
    # was parked or held back (its id left the ledger with it) is applied now.
    REJECT.discard(second)
    gen = await active_generation(pg_conn, "guarded_spans")
    assert gen is not None
    result = await replay(pg_conn, projection, gen)
    assert (result.replayed, result.already_applied, result.still_parked) == (1, 0, 0)
    assert await fetch_all(pg_url, ledger_rows) == sorted([(first, 1), (second, 1), (third, 1)])
