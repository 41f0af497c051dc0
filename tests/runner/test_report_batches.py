"""Batches of reports (``POST /v1/workers/{worker_id}/reports``) and the runner's batcher, on the real API.

A batch is decided in order in one transaction, refuses a bad report alone, records a finish's spans and rewards
with its decision and only once per attempt; a claim with ``start`` is running at once; the batcher sends the
reports of many attempts in one request.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from agl.runner_reports import ReportBatcher
from producers.client import AsyncClient, RolloutAnswer
from producers.errors import CommandRejected
from producers.lifecycle_models import ReportItemIn
from producers.models import RewardIn, SpanIn
from schemas import RewardAssigned, RolloutTransitioned, SpanRecorded, SpansRecorded
from tests.runner.conftest import until
from tests.runner.test_unreachable_api import events_of

pytestmark = [pytest.mark.kafka, pytest.mark.pg]


def span(rollout_id: str, attempt_id: str, i: int) -> SpanIn:
    now = datetime.now(UTC)
    return SpanIn(rollout_id=rollout_id, attempt_id=attempt_id, trace_id="a" * 32, span_id=f"{i:016x}",
                  name=f"step-{i}", start_time=now, end_time=now)  # fmt: skip


async def test_a_batch_is_decided_in_order_refuses_alone_and_records_results_once(
    client, kafka_bootstrap, kafka_topics
):
    await client.enqueue_rollouts([{"rollout_id": f"ro-batch-{i}", "input": i} for i in range(3)])
    one, two = await client.dequeue("w1", limit=2)
    (theirs,) = await client.dequeue("w2")
    results = ReportItemIn(
        rollout_id=one.rollout_id, attempt_id=one.attempt_id, kind="finish", status="succeeded",
        spans=(span(one.rollout_id, one.attempt_id, 1), span(one.rollout_id, one.attempt_id, 2)),
        rewards=(RewardIn(rollout_id=one.rollout_id, attempt_id=one.attempt_id, value=0.5),),
    )  # fmt: skip
    batch = [
        ReportItemIn(rollout_id=one.rollout_id, attempt_id=one.attempt_id, kind="running"),
        results,
        ReportItemIn(rollout_id=two.rollout_id, attempt_id=two.attempt_id, kind="running"),
        ReportItemIn(rollout_id=theirs.rollout_id, attempt_id=theirs.attempt_id, kind="running"),
        ReportItemIn(rollout_id=one.rollout_id, attempt_id="at-nope", kind="heartbeat"),
        ReportItemIn(rollout_id="ro-nope", attempt_id=one.attempt_id, kind="heartbeat"),
        ReportItemIn(rollout_id=two.rollout_id, attempt_id=two.attempt_id, kind="heartbeat"),
    ]
    answers = await client.report_many("w1", batch)
    verdicts = [(a.verdict.rollout_status, a.verdict.attempt_status) if a.verdict else None for a in answers]
    # The running report and the finish of one attempt in one batch: the finish saw the running decision.
    assert verdicts[:3] == [("running", "running"), ("succeeded", "succeeded"), ("running", "running")]
    assert [a.error.status_code if a.error else None for a in answers[3:6]] == [409, 404, 404]
    assert answers[6].verdict is not None and answers[6].verdict.cancelled is False
    # The finish again (its answer lost, say): the same verdict, and its spans and reward are not recorded again.
    (again,) = await client.report_many("w1", [results])
    assert again.verdict == answers[1].verdict
    # The finish's spans travel as one record, a spans.recorded that stands for their span.recorded events.
    (recorded,) = await events_of(kafka_bootstrap, kafka_topics, SpansRecorded, one.rollout_id, count=1)
    assert recorded.attempt_id == one.attempt_id
    assert [(s.name, s.sequence_id) for s in recorded.members()] == [("step-1", 1), ("step-2", 2)]
    # Read as span.recorded (as the spans projection reads the topic), they are the same two spans, once each.
    spans = await events_of(kafka_bootstrap, kafka_topics, SpanRecorded, one.rollout_id, count=2)
    assert sorted(s.span_id for s in spans) == [f"{1:016x}", f"{2:016x}"]
    rewards = await events_of(kafka_bootstrap, kafka_topics, RewardAssigned, one.rollout_id, count=1)
    assert [(r.value, r.attempt_id) for r in rewards] == [(0.5, one.attempt_id)]
    # The rollout the other worker holds was left alone.
    verdict = await client.heartbeat_attempt(theirs.rollout_id, theirs.attempt_id, "w2")
    assert (verdict.rollout_status, verdict.attempt_status) == ("preparing", "preparing")


async def test_a_claim_that_starts_its_attempt_is_one_decision(client, kafka_bootstrap, kafka_topics):
    await client.enqueue_rollout({"q": 1}, rollout_id="ro-started")
    (claim,) = await client.dequeue("w1", start=True)
    verdict = await client.heartbeat_attempt(claim.rollout_id, claim.attempt_id, "w1")
    assert (verdict.rollout_status, verdict.attempt_status) == ("running", "running")
    (decision,) = await events_of(kafka_bootstrap, kafka_topics, RolloutTransitioned, "ro-started", count=1)
    assert (decision.seq, decision.cause, decision.status, decision.attempt_status) == (
        1,
        "claimed",
        "running",
        "running",
    )
    assert decision.attempt_id == claim.attempt_id and decision.attempt_started_at is not None
    rollout = await until(lambda: _running(client, "ro-started"))
    assert rollout.model_dump()["attempts"][0]["status"] == "running"


async def _running(client: AsyncClient, rollout_id: str) -> RolloutAnswer | None:
    found = await client.get_rollout(rollout_id)
    return found if found is not None and found.status == "running" and found.model_dump()["attempts"] else None


async def test_the_batcher_sends_the_reports_of_many_attempts_in_one_request(client):
    await client.enqueue_rollouts([{"rollout_id": f"ro-many-{i:02d}", "input": i} for i in range(40)])
    claims = await client.dequeue("w-many", limit=40, start=True)
    assert len(claims) == 40

    async def never(*_: object) -> None:
        raise AssertionError("the API was reachable")

    batcher = ReportBatcher(client, "w-many", never)
    batcher.start()
    try:
        finishes = [
            ReportItemIn(rollout_id=c.rollout_id, attempt_id=c.attempt_id, kind="finish", status="succeeded")
            for c in claims
        ]
        verdicts = await asyncio.gather(*(batcher.send(f) for f in finishes))
        # Queued while the batcher slept, all forty went in one request.
        assert batcher.requests == 1
        assert {(v.rollout_status, v.attempt_status) for v in verdicts} == {("succeeded", "succeeded")}
        # A refused report raises as the single route's answer would.
        with pytest.raises(CommandRejected) as refused:
            await batcher.send(finishes[0].model_copy(update={"attempt_id": "at-nope"}))
        assert refused.value.status_code == 404
    finally:
        await batcher.stop()
