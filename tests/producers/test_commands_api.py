"""The command API on the real broker and the real PostgreSQL: 202 + events, or 4xx and nothing published."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from agl.app import create_app
from schemas import (
    DocumentDeleted,
    DocumentUpserted,
    ResourcesPublished,
    RewardAssigned,
    RolloutCancelled,
    RolloutEnqueued,
    RolloutTransitioned,
    SpanRecorded,
    decode,
    parse_token,
)
from schemas.topics import KNOWLEDGE, RESOURCES, REWARDS, ROLLOUTS, SPANS
from tests.fixtures.records import read_records
from tests.producers.conftest import api_settings

pytestmark = [pytest.mark.kafka, pytest.mark.pg]

SPAN = {
    "rollout_id": "ro-s",
    "attempt_id": "at-1",
    "trace_id": "0af7651916cd43dd8448eb211c80319c",
    "span_id": "b7ad6b7169203331",
    "name": "openai.chat.completion",
    "start_time": "2025-01-01T00:00:00Z",
    "end_time": "2025-01-01T00:00:01Z",
    "attributes": {"gen_ai.response.id": "r-1"},
}


async def events_on(bootstrap: str, topic: str, count: int) -> list[Any]:
    return [decode(r.value, r.headers) for r in await read_records(bootstrap, topic, count)]


async def test_enqueue_one_rollout(api, kafka_bootstrap, kafka_topics):
    response = await api.post(
        "/v1/rollouts",
        json={"input": {"q": "2+2"}, "mode": "train", "config": {"max_attempts": 2}},
        headers={"X-Correlation-ID": "req-7"},
    )
    assert response.status_code == 202, response.text
    body = response.json()
    (rollout,) = body["rollouts"]
    assert rollout["rollout_id"].startswith("ro-") and len(rollout["rollout_id"]) == 35
    assert rollout["created"] is True
    assert body["event_ids"] == [rollout["event_id"]]
    (position,) = parse_token(body["position"])
    assert position.topic == ROLLOUTS.full_name(kafka_topics)
    (event,) = await events_on(kafka_bootstrap, position.topic, 1)
    assert isinstance(event, RolloutEnqueued)
    assert (event.rollout_id, event.input, event.mode, event.config.max_attempts) == (
        rollout["rollout_id"],
        {"q": "2+2"},
        "train",
        2,
    )
    assert (event.correlation_id, event.source, str(event.event_id)) == ("req-7", "/agl/api", rollout["event_id"])


async def test_enqueue_many_rollouts(api, kafka_bootstrap, kafka_topics):
    response = await api.post("/v1/rollouts", json=[{"input": n, "priority": n} for n in range(5)])
    assert response.status_code == 202, response.text
    ids = [r["rollout_id"] for r in response.json()["rollouts"]]
    assert len(set(ids)) == 5
    events = await events_on(kafka_bootstrap, ROLLOUTS.full_name(kafka_topics), 5)
    assert sorted((e.input, e.rollout_id) for e in events) == list(zip(range(5), ids, strict=True))


async def test_a_client_chosen_rollout_id_makes_a_retry_return_the_same_rollout(api, kafka_bootstrap, kafka_topics):
    request = {"rollout_id": "ro-client-1", "input": {"q": 1}}
    first = await api.post("/v1/rollouts", json=request)
    again = await api.post("/v1/rollouts", json=request)
    assert first.status_code == again.status_code == 202
    assert first.json()["rollouts"][0]["created"] is True
    assert again.json()["rollouts"][0] | {"created": True} == first.json()["rollouts"][0]
    assert again.json()["position"] == first.json()["position"]
    events = await events_on(kafka_bootstrap, ROLLOUTS.full_name(kafka_topics), 1)
    assert [e.rollout_id for e in events] == ["ro-client-1"], "exactly one event, no twin"


async def test_an_idempotency_key_survives_an_api_restart(kafka_bootstrap, kafka_topics, pg_url):
    request = [{"input": "a"}, {"input": "b", "rollout_id": "ro-mine"}]
    headers = {"Idempotency-Key": "batch-42"}
    answers = []
    for _ in range(2):  # two app lifetimes on the same database: the key is remembered in PostgreSQL
        app = create_app(api_settings(kafka_bootstrap, pg_url, kafka_topics))
        async with (
            LifespanManager(app, startup_timeout=60),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client,
        ):
            answers.append(await client.post("/v1/rollouts", json=request, headers=headers))
    first, second = (a.json() for a in answers)
    assert [a.status_code for a in answers] == [202, 202]
    assert [r["rollout_id"] for r in second["rollouts"]] == [r["rollout_id"] for r in first["rollouts"]]
    assert first["rollouts"][1]["rollout_id"] == "ro-mine"
    assert second["event_ids"] == first["event_ids"]
    assert [r["created"] for r in second["rollouts"]] == [False, False]
    events = await events_on(kafka_bootstrap, ROLLOUTS.full_name(kafka_topics), 2)
    assert sorted(str(e.event_id) for e in events) == sorted(first["event_ids"])


async def test_concurrent_retries_publish_one_rollout(api, kafka_bootstrap, kafka_topics):
    request = {"input": "same"}
    answers = await asyncio.gather(
        *(api.post("/v1/rollouts", json=request, headers={"Idempotency-Key": "k-1"}) for _ in range(8))
    )
    assert {a.status_code for a in answers} == {202}
    assert len({a.json()["rollouts"][0]["rollout_id"] for a in answers}) == 1
    assert sum(a.json()["rollouts"][0]["created"] for a in answers) == 1
    assert len(await events_on(kafka_bootstrap, ROLLOUTS.full_name(kafka_topics), 1)) == 1


async def test_reusing_a_key_or_an_id_for_another_request_is_a_conflict(api, kafka_bootstrap, kafka_topics):
    assert (await api.post("/v1/rollouts", json={"input": 1}, headers={"Idempotency-Key": "k"})).status_code == 202
    reused_key = await api.post("/v1/rollouts", json={"input": 2}, headers={"Idempotency-Key": "k"})
    assert reused_key.status_code == 409
    assert "Idempotency-Key 'k' was already used" in reused_key.json()["detail"]
    assert (await api.post("/v1/rollouts", json={"rollout_id": "ro-x", "input": 1})).status_code == 202
    reused_id = await api.post(
        "/v1/rollouts", json=[{"rollout_id": "ro-new", "input": 0}, {"rollout_id": "ro-x", "input": 2}]
    )
    assert reused_id.status_code == 409
    assert "rollout 'ro-x' already exists" in reused_id.json()["detail"]
    events = await events_on(kafka_bootstrap, ROLLOUTS.full_name(kafka_topics), 2)
    assert sorted(e.input for e in events) == [1, 1], "the conflicting requests published nothing"
    retry = await api.post("/v1/rollouts", json={"rollout_id": "ro-new", "input": 0})
    assert retry.json()["rollouts"][0]["created"] is True, "the rejected batch reserved nothing"


@pytest.mark.parametrize(
    "case",
    [
        ({"mode": "train"}, "body.input", "Field required"),
        ({"input": 1, "mode": "sing"}, "body.mode", "Input should be 'train', 'val' or 'test'"),
        ({"input": 1, "config": {"max_attempts": 0}}, "body.config.max_attempts", "greater than or equal to 1"),
        ({"input": 1, "colour": "red"}, "body.colour", "Extra inputs are not permitted"),
        ({"input": 1, "rollout_id": "bad id!"}, "body.rollout_id", "String should match pattern"),
        ([{"input": 1}, {"input": 2, "priority": "high"}], "body.1.priority", "valid integer"),
        ([], "body", "the list is empty"),
        ([{"input": 1, "rollout_id": "ro-d"}, {"input": 2, "rollout_id": "ro-d"}], "body.1.rollout_id", "twice"),
    ],
)
async def test_bad_rollouts_are_422_naming_the_field_and_publish_nothing(api, kafka_bootstrap, kafka_topics, case):
    body, field, reason = case
    response = await api.post("/v1/rollouts", json=body)
    assert response.status_code == 422
    assert f"{field}: " in response.json()["message"] and reason in response.json()["message"]
    assert any(".".join(map(str, e["loc"])) == field for e in response.json()["detail"])
    await _only_the_marker_is_on(api, kafka_bootstrap, ROLLOUTS.full_name(kafka_topics))


async def test_malformed_json_and_oversized_bodies_are_rejected(kafka_bootstrap, kafka_topics, pg_url):
    app = create_app(api_settings(kafka_bootstrap, pg_url, kafka_topics, api_max_body_bytes=4096))
    async with (
        LifespanManager(app, startup_timeout=60),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as api,
    ):
        not_json = await api.post("/v1/rollouts", content=b"{oops", headers={"content-type": "application/json"})
        assert not_json.status_code == 422 and "not JSON" in not_json.json()["message"]
        too_big = await api.post("/v1/spans", json=[SPAN] * 50)
        assert too_big.status_code == 413 and "exceeds 4096 bytes" in too_big.json()["detail"]

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the limit counts what streams in
            for _ in range(10):
                yield b" " * 1000

        streamed = await api.post("/v1/rollouts", content=chunks(), headers={"content-type": "application/json"})
        assert streamed.status_code == 413
        await _only_the_marker_is_on(api, kafka_bootstrap, ROLLOUTS.full_name(kafka_topics))


async def _only_the_marker_is_on(api: httpx.AsyncClient, bootstrap: str, topic: str) -> None:
    marker = await api.post("/v1/rollouts", json={"input": "marker"})
    assert marker.status_code == 202
    assert [e.input for e in await events_on(bootstrap, topic, 1)] == ["marker"]


async def test_cancel_a_rollout(api, kafka_bootstrap, kafka_topics):
    assert (await api.post("/v1/rollouts/ro-9/cancel")).status_code == 404, "never enqueued"
    assert (await api.post("/v1/rollouts", json={"rollout_id": "ro-9", "input": 1})).status_code == 202
    response = await api.post("/v1/rollouts/ro-9/cancel", json={"reason": "enough"})
    bare = await api.post("/v1/rollouts/ro-9/cancel")
    assert response.status_code == bare.status_code == 202
    assert response.json()["event_ids"] and bare.json()["event_ids"] == [], "cancelling twice decides once"
    events = await events_on(kafka_bootstrap, ROLLOUTS.full_name(kafka_topics), 3)
    (cancel,) = [e for e in events if isinstance(e, RolloutCancelled)]
    assert cancel.rollout_id == "ro-9" and cancel.reason == "enough"
    (decision,) = [e for e in events if isinstance(e, RolloutTransitioned)]
    assert (decision.status, decision.cause, decision.reason) == ("cancelled", "cancelled", "enough")
    assert (await api.post("/v1/rollouts/bad id/cancel")).status_code == 422


async def test_resources_get_consecutive_versions(api, kafka_bootstrap, kafka_topics):
    body = {
        "resources_id": "rs-a",
        "resources": {"llm": {"resource_type": "llm", "endpoint": "http://x", "model": "m"}},
    }
    answers = [await api.post("/v1/resources", json=body) for _ in range(3)]
    assert [a.json()["resources_version"] for a in answers] == [1, 2, 3]
    generated = await api.post(
        "/v1/resources", json={"resources": {"p": {"resource_type": "prompt_template", "template": "t"}}}
    )
    assert generated.json()["resources_id"].startswith("rs-") and generated.json()["resources_version"] == 1
    bad = await api.post("/v1/resources", json={"resources": {"x": {"resource_type": "gpu"}}})
    assert bad.status_code == 422 and "body.resources.x" in bad.json()["message"]
    events = await events_on(kafka_bootstrap, RESOURCES.full_name(kafka_topics), 4)
    assert [(e.resources_id, e.resources_version) for e in events if isinstance(e, ResourcesPublished)][:3] == [
        ("rs-a", 1),
        ("rs-a", 2),
        ("rs-a", 3),
    ]


async def test_knowledge_documents_upsert_and_delete(api, kafka_bootstrap, kafka_topics):
    doc = {"collection": "faq", "document_id": "d-1", "text": "hello", "embedding": [0.1, 0.2]}
    first, second = [await api.post("/v1/knowledge/documents", json=doc) for _ in range(2)]
    assert (first.json()["document_version"], second.json()["document_version"]) == (1, 2)
    deleted = await api.delete("/v1/knowledge/documents/d-1", params={"collection": "faq"})
    assert deleted.status_code == 202 and deleted.json()["document_version"] is None
    assert (await api.delete("/v1/knowledge/documents/d-1")).status_code == 422, "collection is required"
    events = await events_on(kafka_bootstrap, KNOWLEDGE.full_name(kafka_topics), 3)
    assert [type(e) for e in events] == [DocumentUpserted, DocumentUpserted, DocumentDeleted], "one key, in order"
    assert events[1].embedding == (0.1, 0.2)


async def test_rewards_one_or_many(api, kafka_bootstrap, kafka_topics):
    one = await api.post("/v1/rewards", json={"rollout_id": "ro-1", "value": 1.0})
    many = await api.post("/v1/rewards", json=[{"rollout_id": "ro-2", "value": v} for v in (0.1, 0.2)])
    assert one.status_code == many.status_code == 202
    assert len(many.json()["event_ids"]) == 2
    nan = await api.post("/v1/rewards", content=b'{"rollout_id": "ro-3", "value": NaN}')
    assert nan.status_code == 422
    events = await events_on(kafka_bootstrap, REWARDS.full_name(kafka_topics), 3)
    assert sorted(e.value for e in events if isinstance(e, RewardAssigned)) == [0.1, 0.2, 1.0]


async def test_spans_are_numbered_per_rollout_unless_numbered_by_the_client(api, kafka_bootstrap, kafka_topics):
    batch = [SPAN | {"span_id": f"{i:016x}"} for i in range(3)] + [SPAN | {"rollout_id": "ro-t", "span_id": "f" * 16}]
    first = await api.post("/v1/spans", json=batch)
    second = await api.post("/v1/spans", json=SPAN | {"span_id": "a" * 16})
    client_numbered = await api.post("/v1/spans", json=[SPAN | {"rollout_id": "ro-u", "sequence_id": 42}])
    assert first.json()["sequence_ids"] == [1, 2, 3, 1]
    assert second.json()["sequence_ids"] == [4]
    assert client_numbered.json()["sequence_ids"] == [42]
    backwards = await api.post("/v1/spans", json=SPAN | {"end_time": "2024-12-31T00:00:00Z"})
    assert backwards.status_code == 422 and "end_time is before start_time" in backwards.json()["message"]
    naive = await api.post("/v1/spans", json=SPAN | {"start_time": "2025-01-01T00:00:00"})
    assert naive.status_code == 422 and "body.start_time" in naive.json()["message"]
    events = await events_on(kafka_bootstrap, SPANS.full_name(kafka_topics), 6)
    assert sorted((e.rollout_id, e.sequence_id) for e in events if isinstance(e, SpanRecorded)) == [
        ("ro-s", 1),
        ("ro-s", 2),
        ("ro-s", 3),
        ("ro-s", 4),
        ("ro-t", 1),
        ("ro-u", 42),
    ]


async def test_the_openapi_document_describes_one_or_many_bodies(api):
    document = (await api.get("/openapi.json")).json()
    body = document["paths"]["/v1/rollouts"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["oneOf"][0] == {"$ref": "#/components/schemas/RolloutIn"}
    assert "input" in document["components"]["schemas"]["RolloutIn"]["required"]
    assert "RolloutConfig" in document["components"]["schemas"]


async def test_a_retried_command_with_its_key_publishes_once(api, kafka_bootstrap, kafka_topics):
    from schemas.topics import REWARDS, SPANS
    from tests.producers.test_hostile_input import _records_on

    reward = {"rollout_id": "ro-1", "value": 0.5}
    first = await api.post("/v1/rewards", json=reward, headers={"Idempotency-Key": "k-1"})
    again = await api.post("/v1/rewards", json=reward, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == again.status_code == 202 and first.json() == again.json()
    other = await api.post("/v1/rewards", json={**reward, "value": 1.0}, headers={"Idempotency-Key": "k-1"})
    assert other.status_code == 409
    span = {
        "rollout_id": "ro-1",
        "attempt_id": "at-1",
        "trace_id": "1" * 32,
        "span_id": "2" * 16,
        "name": "step",
        "start_time": "2025-01-01T00:00:00Z",
    }
    spans = [await api.post("/v1/spans", json=[span], headers={"Idempotency-Key": "s-1"}) for _ in range(2)]
    assert spans[0].json() == spans[1].json() and spans[0].json()["sequence_ids"] == [1]
    assert await _records_on(kafka_bootstrap, REWARDS, kafka_topics) == 1
    assert await _records_on(kafka_bootstrap, SPANS, kafka_topics) == 1


async def test_a_rollout_naming_no_resources_is_pinned_to_the_latest_at_enqueue(api, kafka_bootstrap, kafka_topics):
    """Decided by the write side and recorded in rollout.enqueued (Agent Lightning's rule), never looked up later in
    a read model that may not have caught up (no resources projection runs here at all)."""
    llm = {"llm": {"resource_type": "llm", "endpoint": "http://x/v1", "model": "m"}}

    async def enqueue(**extra: Any) -> str:
        answer = await api.post("/v1/rollouts", json={"input": {"q": 1}, **extra})
        assert answer.status_code == 202, answer.text
        rollout_id: str = answer.json()["rollouts"][0]["rollout_id"]
        return rollout_id

    first = (await api.post("/v1/resources", json={"resources_id": "rs-pin-1", "resources": llm})).json()
    pinned_first = await enqueue()
    named = await enqueue(resources_id="rs-mine")
    await api.post("/v1/resources", json={"resources_id": "rs-pin-2", "resources": llm})
    await api.post("/v1/resources", json={"resources_id": "rs-pin-1", "resources": llm})  # version 2: the latest
    pinned_again = await enqueue()
    events = await events_on(kafka_bootstrap, ROLLOUTS.full_name(kafka_topics), 1)
    resources_of = {e.rollout_id: e.resources_id for e in events if isinstance(e, RolloutEnqueued)}
    assert first["resources_version"] == 1
    assert resources_of[pinned_first] == "rs-pin-1"
    assert resources_of[named] == "rs-mine"  # a rollout naming its resources keeps them
    assert resources_of[pinned_again] == "rs-pin-1"  # the id published last, whatever its version
