"""Hostile input at the command API (real broker, real PostgreSQL): 422 naming the field, and nothing published.

A NUL or a lone surrogate accepted with 202 becomes an event no projection can store (it is parked, its key
blocked, the archive left with a gap); an unbounded or ``/``-bearing id is a 500 or a rollout no path reaches.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from asgi_lifespan import LifespanManager

from agl.app import create_app
from schemas import SpanRecorded, decode
from schemas.topics import KNOWLEDGE, RESOURCES, REWARDS, ROLLOUTS, SPANS, TopicSpec
from tests.fixtures.records import read_records
from tests.producers.conftest import api_settings

pytestmark = [pytest.mark.kafka, pytest.mark.pg]

SPAN = {
    "rollout_id": "ro-s",
    "attempt_id": "at-1",
    "trace_id": "0af7651916cd43dd8448eb211c80319c",
    "span_id": "b7ad6b7169203331",
    "name": "llm",
    "start_time": "2025-01-01T00:00:00Z",
}
PROMPT = {"resource_type": "prompt_template", "template": "t"}
NUL, SURROGATE = "a\u0000b", "x\ud800"


def nested(depth: int) -> Any:
    """A value ``depth`` lists deep."""
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


SPAN_EVENT = {"name": SURROGATE, "timestamp": "2025-01-01T00:00:00Z"}

#: (method, url, body, the loc the 422 must name). Bodies are sent as ASCII JSON (surrogates as escapes).
HOSTILE: list[tuple[str, str, Any, str]] = [
    ("POST", "/v1/rollouts", {"input": NUL}, "body.input"),
    ("POST", "/v1/rollouts", {"input": {"k": ["ok", SURROGATE]}}, "body.input.k.1"),
    ("POST", "/v1/rollouts", {"input": 1, "metadata": {NUL: 1}}, "body.metadata.a\\u0000b"),
    ("POST", "/v1/rollouts", {"input": 1, "metadata": {SURROGATE: 1}}, "body.metadata.x\\ud800"),
    ("POST", "/v1/rollouts", [{"input": 1}, {"input": "\udc00"}], "body.1.input"),
    ("POST", "/v1/rollouts", {"input": 1, "config": {"retry_condition": [NUL]}}, "body.config.retry_condition.0"),
    ("POST", "/v1/rollouts", {"input": 1, "rollout_id": "ro/x"}, "body.rollout_id"),
    ("POST", "/v1/rollouts", {"input": 1, "rollout_id": "r" * 201}, "body.rollout_id"),
    ("POST", "/v1/rollouts", {"input": 1, "resources_id": "rs" * 2000}, "body.resources_id"),
    ("POST", "/v1/rollouts", {"input": 1, "priority": 2**31}, "body.priority"),
    ("POST", "/v1/rollouts", b'{"input": NaN}', "body.input"),
    ("POST", "/v1/rollouts", {"input": {"n": 2**64}}, "body.input.n"),
    ("POST", "/v1/rollouts", {"input": 1, "metadata": {"n": [-(2**63) - 1]}}, "body.metadata.n.0"),
    ("POST", "/v1/resources", b'{"resources": {"p": {"resource_type": "llm", "endpoint": "e", "model": "m", '
     b'"sampling_parameters": {"t": [Infinity]}}}}', "body.resources.p.sampling_parameters.t.0"),
    ("POST", "/v1/rollouts", '{"input": "\ud800"}'.encode("utf-8", "surrogatepass"), "body.input"),
    ("POST", "/v1/rollouts/ro-1/cancel", {"reason": NUL}, "body.reason"),
    ("POST", "/v1/rollouts/ro%00x/cancel", None, "path"),
    ("POST", "/v1/rollouts/" + "r" * 201 + "/cancel", None, "path.rollout_id"),
    ("POST", "/v1/rewards", {"rollout_id": "ro-1", "value": 1, "name": NUL}, "body.name"),
    ("POST", "/v1/rewards", {"rollout_id": "r" * 5000, "value": 1}, "body.rollout_id"),
    ("POST", "/v1/rewards", {"rollout_id": "ro-1", "attempt_id": "at/1", "value": 1}, "body.attempt_id"),
    ("POST", "/v1/rewards", {"rollout_id": "r", "value": 1, "dimensions": {SURROGATE: 1}}, "body.dimensions.x\\ud800"),
    ("POST", "/v1/spans", SPAN | {"attributes": {"k": NUL}}, "body.attributes.k"),
    ("POST", "/v1/spans", [SPAN, SPAN | {"rollout_id": "r" * 5000}], "body.1.rollout_id"),
    ("POST", "/v1/spans", SPAN | {"attempt_id": "a" * 201}, "body.attempt_id"),
    ("POST", "/v1/spans", SPAN | {"sequence_id": 2**63}, "body.sequence_id"),
    ("POST", "/v1/spans", SPAN | {"events": [SPAN_EVENT]}, "body.events.0.name"),
    ("POST", "/v1/spans", SPAN | {"status": {"status_code": "ERROR", "description": NUL}}, "body.status.description"),
    ("POST", "/v1/resources", {"resources": {"p": PROMPT | {"template": NUL}}}, "body.resources.p.template"),
    ("POST", "/v1/resources", {"resources": {NUL: PROMPT}}, "body.resources.a\\u0000b"),
    ("POST", "/v1/resources", {"resources_id": "rs/1", "resources": {"p": PROMPT}}, "body.resources_id"),
    ("POST", "/v1/knowledge/documents", {"collection": "c", "text": NUL}, "body.text"),
    ("POST", "/v1/knowledge/documents", {"collection": "c", "text": "t", "metadata": {"a": [{"b": SURROGATE}]}},
     "body.metadata.a.0.b"),
    ("POST", "/v1/knowledge/documents", {"collection": "c/d", "text": "t"}, "body.collection"),
    ("DELETE", "/v1/knowledge/documents/d-1?collection=c%00", None, "query.collection"),
    ("DELETE", "/v1/knowledge/documents/d%00?collection=c", None, "path"),
    # Nested more than 128 levels, the body counting one: before the limit, 253 levels were answered 500 (orjson
    # stops at 254) and 249 were answered 202, then parked (pydantic could not read the event back).
    ("POST", "/v1/rollouts", {"input": nested(128)}, "body"),
    ("POST", "/v1/rollouts", [{"input": 1}, {"input": 1, "metadata": {"m": nested(127)}}], "body"),
    ("POST", "/v1/spans", SPAN | {"attributes": {"k": nested(127)}}, "body"),
    ("POST", "/v1/knowledge/documents", {"collection": "c", "text": "t", "metadata": {"m": nested(127)}}, "body"),
    ("POST", "/v1/agl/queues/rollouts/enqueue", {"rollouts": [{"input": nested(127)}]}, "body"),
    ("POST", "/v1/agl/rollouts/search", b"[" * 5000 + b"]" * 5000, "body"),  # Python's json recursed to a 500
    # Closing brackets in a string are text: they do not hide the depth.
    ("POST", "/v1/rollouts", {"input": "]" * 300 + '\\"]', "metadata": {"m": nested(128)}}, "body"),
]  # fmt: skip


def _content(body: Any) -> bytes | None:
    if body is None or isinstance(body, bytes):
        return body
    return json.dumps(body).encode()  # ensure_ascii: a lone surrogate travels as an escape, as clients send it


async def _records_on(bootstrap: str, spec: TopicSpec, prefix: str) -> int:
    """How many records the topic holds: the sum of its partitions' end offsets (the fixture created it empty)."""
    topic = spec.full_name(prefix)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in range(spec.partitions)])
        return sum(ends.values())
    finally:
        await consumer.stop()


async def test_hostile_bodies_paths_and_queries_are_422_naming_the_field_and_publish_nothing(
    api, kafka_bootstrap, kafka_topics
):
    for method, url, body, loc in HOSTILE:
        answer = await api.request(method, url, content=_content(body), headers={"content-type": "application/json"})
        assert answer.status_code == 422, (url, body, answer.text)
        named = [".".join(map(str, e["loc"])) for e in answer.json()["detail"]]
        assert loc in named, (url, body, named)
        assert f"{loc}: " in answer.json()["message"]
    # A marker per topic, published after every hostile request: once it is on the log, so would be anything
    # published before it, and it must be the only record there.
    markers = [
        ("/v1/rollouts", {"input": "marker 😀 \\u0000 NaN 1e300", "metadata": {"e": 1e300}}, ROLLOUTS),
        ("/v1/rewards", {"rollout_id": "ro-1", "value": 1}, REWARDS),
        ("/v1/spans", SPAN, SPANS),
        ("/v1/resources", {"resources": {"p": PROMPT}}, RESOURCES),
        ("/v1/knowledge/documents", {"collection": "c", "text": "t"}, KNOWLEDGE),
    ]
    for url, body, spec in markers:
        # ASCII JSON: the emoji travels as a surrogate *pair*, which is valid text and must pass.
        answer = await api.post(url, content=json.dumps(body).encode(), headers={"content-type": "application/json"})
        assert answer.status_code == 202, (url, answer.text)
        topic = spec.full_name(kafka_topics)
        (record,) = await read_records(kafka_bootstrap, topic, 1)
        assert await _records_on(kafka_bootstrap, spec, kafka_topics) == 1, (
            f"something besides the marker is on {topic}"
        )
    assert json.loads(record.value)["text"] == "t"


async def test_a_valid_surrogate_pair_and_look_alike_text_are_accepted_intact(api, kafka_bootstrap, kafka_topics):
    text = "😀 \\u0000 \\ud800 NaN Infinity 1e999"  # escapes as plain text: a backslash, then letters
    body = {"input": text, "metadata": {"big": 1e300}}
    answer = await api.post(
        "/v1/rollouts", content=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )
    assert answer.status_code == 202, answer.text
    (record,) = await read_records(kafka_bootstrap, ROLLOUTS.full_name(kafka_topics), 1)
    event = json.loads(record.value)
    assert (event["input"], event["metadata"]) == (text, {"big": 1e300})


async def test_values_nested_up_to_the_limit_are_accepted_and_read_back_as_projections_read_them(
    api, kafka_bootstrap, kafka_topics
):
    # 128 levels with the body: the span's attributes, then 126 lists; brackets and quotes in strings are text.
    text = '[{"]]}} \\" [[' * 40
    span = SPAN | {"attributes": {"k": nested(126), "t": text}}
    answer = await api.post(
        "/v1/spans", content=json.dumps(span).encode(), headers={"content-type": "application/json"}
    )
    assert answer.status_code == 202, answer.text
    (record,) = await read_records(kafka_bootstrap, SPANS.full_name(kafka_topics), 1)
    event = decode(record.value, record.headers)  # what failed in the triplets projection at 249 levels
    assert isinstance(event, SpanRecorded) and event.attributes == {"k": nested(126), "t": text}


async def test_an_oversized_hostile_body_is_413_before_it_is_inspected(kafka_bootstrap, kafka_topics, pg_url):
    app = create_app(api_settings(kafka_bootstrap, pg_url, kafka_topics, api_max_body_bytes=1024))
    async with (
        LifespanManager(app, startup_timeout=60),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client,
    ):
        body = json.dumps({"input": NUL * 1000}).encode()
        answer = await client.post("/v1/rollouts", content=body, headers={"content-type": "application/json"})
        assert answer.status_code == 413


def test_the_openapi_document_declares_every_status_of_each_route(app):
    document = app.openapi()
    expected = {
        ("post", "/v1/rollouts"): {"202", "409", "413", "422", "503"},
        ("post", "/v1/rollouts/{rollout_id}/cancel"): {"202", "404", "413", "422", "503"},
        ("post", "/v1/rewards"): {"202", "413", "422", "503"},
        ("post", "/v1/spans"): {"202", "413", "422", "503"},
        ("post", "/v1/resources"): {"202", "413", "422", "503"},
        ("post", "/v1/knowledge/documents"): {"202", "413", "422", "503"},
        ("delete", "/v1/knowledge/documents/{document_id}"): {"202", "413", "422", "503"},
        ("get", "/v1/rollouts"): {"200", "400", "422", "503"},
        ("get", "/v1/rollouts/{rollout_id}"): {"200", "400", "404", "422", "503"},
        ("get", "/v1/projections"): {"200", "503"},
    }
    for (method, path), statuses in expected.items():
        declared = set(document["paths"][path][method]["responses"])
        assert statuses <= declared, (method, path, statuses - declared)
    invalid = document["paths"]["/v1/spans"]["post"]["responses"]["422"]["content"]["application/json"]["schema"]
    assert invalid == {"$ref": "#/components/schemas/InvalidAnswer"}
    cancel = document["paths"]["/v1/rollouts/{rollout_id}/cancel"]["post"]["responses"]
    assert "409" not in cancel, "only routes that conflict say so"
