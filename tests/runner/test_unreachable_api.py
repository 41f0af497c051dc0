"""A runner cut off from the API: it backs off, resends every report in order with the same ids, loses none."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer

from agl.runner import Runner, RunnerOptions
from producers.client import AsyncClient, RetryPolicy
from schemas import TOPIC_BY_EVENT, RewardAssigned, SpanRecorded, decode
from tests.fixtures.events import seen_as
from tests.runner import agents

pytestmark = [pytest.mark.kafka, pytest.mark.pg]


class Cutoff(httpx.AsyncBaseTransport):
    """The real API behind a failing network, by the last path segment of a request (``dequeue``, ``reports``...).

    ``before[k]`` requests fail before reaching the API; ``after[k]`` reach it and lose their answer.
    """

    def __init__(self, inner: httpx.AsyncBaseTransport, before: dict[str, int], after: dict[str, int]) -> None:
        self.inner, self.before, self.after = inner, dict(before), dict(after)
        self.sent: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        what = request.url.path.rsplit("/", 1)[-1]
        self.sent.append(what)
        if self.before.get(what, 0) > 0:
            self.before[what] -= 1
            raise httpx.ConnectError("the network is down", request=request)
        response = await self.inner.handle_async_request(request)
        await response.aread()
        if self.after.get(what, 0) > 0:
            self.after[what] -= 1
            raise httpx.ReadError("the answer was lost", request=request)
        return response


async def events_of(bootstrap: str, prefix: str, event_type, rollout_id: str, *, count: int, timeout_s: float = 30.0):
    topic = TOPIC_BY_EVENT[event_type].full_name(prefix)
    found: list[Any] = []
    async with AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest") as consumer:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while len(found) < count and asyncio.get_running_loop().time() < deadline:
            for records in (await consumer.getmany(timeout_ms=300)).values():
                events = (e for r in records for e in seen_as(event_type, decode(r.value, r.headers)))
                found += [e for e in events if getattr(e, "rollout_id", None) == rollout_id]
        # Anything more (a twin) would arrive within a moment of the rest.
        for records in (await consumer.getmany(timeout_ms=1000)).values():
            events = (e for r in records for e in seen_as(event_type, decode(r.value, r.headers)))
            found += [e for e in events if getattr(e, "rollout_id", None) == rollout_id]
    return found


async def test_reports_survive_a_failing_network_in_order_with_the_same_ids(app, client, kafka_bootstrap, kafka_topics):
    await client.enqueue_rollout({"x": 1}, rollout_id="ro-cutoff")
    cutoff = Cutoff(
        httpx.ASGITransport(app=app),
        before={"register": 2, "dequeue": 2, "reports": 3},
        after={"reports": 1},
    )
    http = httpx.AsyncClient(transport=cutoff, base_url="http://api", timeout=60)
    async with AsyncClient("http://api", http=http, retry=RetryPolicy(attempts=1)) as flaky:
        runner = Runner(agents.traced, flaky, RunnerOptions(max_rollouts=1, heartbeat_s=60))
        assert await asyncio.wait_for(runner.run(), 120) == Counter({"succeeded": 1})
    (record,) = runner.records
    assert record.rewards == (0.75,) and record.verdict is not None
    assert (record.verdict.rollout_status, record.verdict.attempt_status) == ("succeeded", "succeeded")
    # The claim started the attempt; its outcome, spans and reward went in one batch of reports, sent until the
    # API answered (3 sends cut off, 1 answer lost, then the answer).
    assert [w for w in cutoff.sent if w in ("running", "spans", "rewards", "finish", "reports")] == ["reports"] * 5
    rollout = (await client.wait_rollouts(["ro-cutoff"], 30))[0].model_dump()
    assert rollout["status"] == "succeeded" and len(rollout["attempts"]) == 1
    # The batch whose answer was lost was resent as it was: the finish was a duplicate and the attempt's results
    # were recorded already, so the API published nothing new and each span is on the log once.
    # The agent's two returned spans and the annotation span its emit_reward traced.
    spans = await events_of(kafka_bootstrap, kafka_topics, SpanRecorded, "ro-cutoff", count=3)
    assert len(spans) == 3 and len({s.span_id for s in spans}) == 3
    assert {s.attempt_id for s in spans} == {record.attempt_id}
    rewards = await events_of(kafka_bootstrap, kafka_topics, RewardAssigned, "ro-cutoff", count=1)
    assert [(r.value, r.attempt_id) for r in rewards] == [(0.75, record.attempt_id)]


async def test_a_claim_whose_answer_was_lost_is_answered_again_and_run_once(app, client, kafka_bootstrap, kafka_topics):
    await client.enqueue_rollouts([{"rollout_id": f"ro-lost-claim-{i}", "input": {"x": i}} for i in range(2)])
    # The API claims both rollouts and its answer is lost (it died after committing, say).
    cutoff = Cutoff(httpx.ASGITransport(app=app), before={}, after={"dequeue": 1})
    http = httpx.AsyncClient(transport=cutoff, base_url="http://api", timeout=60)
    async with AsyncClient("http://api", http=http, retry=RetryPolicy(attempts=1)) as flaky:
        runner = Runner(agents.traced, flaky, RunnerOptions(max_rollouts=2, slots=2, heartbeat_s=60))
        # Without the key, the resend claims nothing (both are taken) and the runner waits for ever.
        assert await asyncio.wait_for(runner.run(), 60) == Counter({"succeeded": 2})
    assert cutoff.sent.count("dequeue") == 2
    done = [r.model_dump() for r in await client.wait_rollouts([f"ro-lost-claim-{i}" for i in range(2)], 30)]
    assert [(r["status"], [a["sequence_id"] for a in r["attempts"]]) for r in done] == [("succeeded", [1])] * 2
    assert {r["attempts"][0]["attempt_id"] for r in done} == {record.attempt_id for record in runner.records}


class StopOnLostAnswer(Cutoff):
    """A Cutoff that calls ``on_lost`` when it loses an answer: the runner is told to stop at that moment."""

    on_lost: Any = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return await super().handle_async_request(request)
        except httpx.ReadError:
            self.on_lost()
            raise


async def test_a_runner_stopped_with_a_claim_unanswered_runs_its_claims_before_leaving(app, client):
    ids = [f"ro-stop-unanswered-{i}" for i in range(2)]
    await client.enqueue_rollouts([{"rollout_id": i, "input": {"x": 1}} for i in ids])
    # The API claims both rollouts, the answer is lost, and the runner is stopped before it resends.
    cutoff = StopOnLostAnswer(httpx.ASGITransport(app=app), before={}, after={"dequeue": 1})
    http = httpx.AsyncClient(transport=cutoff, base_url="http://api", timeout=60)
    async with AsyncClient("http://api", http=http, retry=RetryPolicy(attempts=1)) as flaky:
        runner = Runner(agents.traced, flaky, RunnerOptions(slots=2, heartbeat_s=60, poll_wait_ms=100))
        cutoff.on_lost = runner.stop
        assert await asyncio.wait_for(runner.run(), 60) == Counter({"succeeded": 2})
    # Deregistering without asking again would have ended both attempts unresponsive, with nothing run.
    assert cutoff.sent.count("dequeue") == 2 and cutoff.sent[-1] == "deregister"
    done = [r.model_dump() for r in await client.wait_rollouts(ids, 30)]
    assert [(r["status"], [a["status"] for a in r["attempts"]]) for r in done] == [("succeeded", ["succeeded"])] * 2
