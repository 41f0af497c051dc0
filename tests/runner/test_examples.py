"""The example math agent on the real local LLM, through ``agl.dev`` (the in-process runner) and the real API."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer

from agl.dev_loop import dev_async
from examples.math_agent import first_number, load_tasks, math_agent, messages_for, reward_of
from schemas import TOPIC_BY_EVENT, LLMResource, RewardAssigned, decode

pytestmark = [pytest.mark.kafka, pytest.mark.pg]


def test_the_reward_is_one_for_the_right_result_else_zero():
    assert first_number("The answer is -2.") == -2.0 and first_number("no digits") is None
    assert reward_of("12", 12) == 1.0 and reward_of(" 12.0 apples", 12) == 1.0
    # The result after the last "=" decides, not the operands restated before it.
    assert reward_of("7 + 5 = 12.", 12) == 1.0 and reward_of("7 + 5 = 13", 12) == 0.0
    assert reward_of("12 = 7 + 5 = 12\n\nYou are right, 7 is", 12) == 1.0
    assert reward_of("To add 7 and 5, you add them.", 12) == 0.0 and reward_of("7 + 5 =", 12) == 0.0
    assert reward_of("8 - 10 = -2", -2) == 1.0
    assert reward_of(None, 1) == 0.0
    # The prompt: the system line, one worked example, then the task's question.
    roles = [(m["role"], m["content"]) for m in messages_for("What is 7 + 5?")]
    assert roles[0][0] == "system" and roles[1:] == [
        ("user", "What is 2 + 3?"), ("assistant", "2 + 3 = 5"), ("user", "What is 7 + 5?"),
    ]  # fmt: skip
    tasks = load_tasks()
    assert len(tasks) == 12 and all(set(t) == {"question", "answer"} for t in tasks)


async def rewards_on_the_log(bootstrap: str, prefix: str, rollout_ids: set[str], timeout_s: float = 30.0):
    """The reward.assigned events of ``rollout_ids``, read back from Kafka."""
    topic = TOPIC_BY_EVENT[RewardAssigned].full_name(prefix)
    found: list[RewardAssigned] = []
    async with AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest") as consumer:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while {r.rollout_id for r in found} != rollout_ids and asyncio.get_running_loop().time() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    event = decode(record.value, record.headers)
                    if isinstance(event, RewardAssigned) and event.rollout_id in rollout_ids:
                        found.append(event)
    return found


async def test_the_math_agent_ends_succeeded_with_a_reward_recorded(
    client, llm_endpoint, llm_model, kafka_bootstrap, kafka_topics
):
    published = await client.publish_resources({"llm": LLMResource(endpoint=llm_endpoint, model=llm_model)})
    tasks = load_tasks()[:3]
    # Pinned to the resources just published: the runner waits for the read model to have them.
    rollouts = await dev_async(math_agent, tasks, client=client, slots=2, resources_id=published.resources_id)
    assert [r.input for r in rollouts] == tasks
    assert [r.status for r in rollouts] == ["succeeded"] * 3, [r.error for r in rollouts]
    assert all(r.reward in (0.0, 1.0) and r.attempts == 1 for r in rollouts)
    on_log = await rewards_on_the_log(kafka_bootstrap, kafka_topics, {r.rollout_id for r in rollouts})
    by_rollout = {e.rollout_id: e for e in on_log}
    assert len(on_log) == 3  # one reward per rollout, none twice
    for rollout in rollouts:
        event = by_rollout[rollout.rollout_id]
        assert event.value == rollout.reward
        assert event.attempt_id == rollout.detail["attempts"][0]["attempt_id"]
