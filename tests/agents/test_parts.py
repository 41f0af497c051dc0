"""The pieces of the agent pools that need no service: graders, the kind table, the pools file, the wait reason,
the supervisor's restart backoff, and the agents' prompts with their tools' facts."""

from __future__ import annotations

import importlib
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agl.agents import AGENT_TYPES, data_analyst, general_assistant, qa_tester
from agl.agents.graders import grade
from agl.agents.kinds import TASK_KINDS, agent_types_for, capabilities_for, pinned_to, worker_capabilities
from agl.agents.pools import Pool, load_pools, parse_pools
from agl.agents.supervisor import Instance, PoolSupervisor
from agl.agents.tasks import load_tasks, mixed_batch, shipped_kinds
from agl.errors import ConfigError
from projections.routes.agents import AgentOut, describe_wait, health_history


def test_graders_reward_in_zero_to_one():
    assert grade({"kind": "number", "answer": 5432}, "It is 5,432.") == 1.0
    assert grade({"kind": "number", "answer": 5432}, "5433") == 0.0
    assert grade({"kind": "number", "answer": 5}, None) == 0.0
    assert grade({"kind": "keywords", "all": ["17", "18", "65", "66"]}, "test 17 and 18") == 0.5
    assert grade({"kind": "regex", "pattern": "xss|cross.site"}, "Cross-site scripting") == 1.0
    with pytest.raises(Exception, match="unknown check kind"):
        grade({"kind": "vibes"}, "fine")


def test_every_shipped_task_has_a_known_kind_and_a_gradable_check():
    assert sorted(shipped_kinds()) == sorted(k for k in TASK_KINDS if k != "python")
    for kind in shipped_kinds():
        for task in load_tasks(kind):
            assert task["kind"] == kind and agent_types_for(kind)
            assert grade(task["check"], "") == 0.0  # an empty answer earns nothing
    assert len({t["kind"] for t in mixed_batch(6)}) == 6


def test_kinds_map_to_capabilities_and_the_types_that_serve_them():
    assert capabilities_for("analysis") == ("sql",)
    assert agent_types_for("python") == ("web_developer", "data_analyst", "qa_tester")
    assert pinned_to("python", "qa_tester") == ("python", "agent:qa_tester")
    with pytest.raises(ConfigError):
        pinned_to("security", "qa_tester")
    with pytest.raises(ConfigError):
        capabilities_for("astrology")
    assert worker_capabilities("qa_tester", "3") == ("python", "test-design", "agent:qa_tester", "version:3")


def test_the_shipped_pools_file_runs_every_type_and_bad_files_are_refused():
    assert sorted(p.agent_type for p in load_pools()) == sorted(AGENT_TYPES)
    # Slots in proportion to answer length, so that a mixed batch's pools finish together (agents.toml).
    slots = {p.agent_type: p.slots for p in load_pools()}
    tokens = {t: importlib.import_module(f"agl.agents.{t}").agent.max_tokens for t in AGENT_TYPES}
    assert {t: slots[t] / tokens[t] for t in AGENT_TYPES} == dict.fromkeys(AGENT_TYPES, 4 / 24)
    with pytest.raises(ConfigError, match="unknown agent type"):
        parse_pools({"pools": {"astrologer": {}}})
    with pytest.raises(ConfigError, match="instances must be"):
        parse_pools({"pools": {"qa_tester": {"instances": 0}}})
    with pytest.raises(ConfigError, match="takes instances"):
        parse_pools({"pools": {"qa_tester": {"replicas": 2}}})
    (pool,) = parse_pools({"pools": {"qa_tester": {"instances": 2, "slots": 3, "capabilities": ["pytest"]}}})
    assert pool == Pool("qa_tester", 2, 3, ("pytest",))
    assert "pytest" in pool.capabilities()


def _agent(caps: list[str], *, slots: int = 2, busy: int = 0) -> AgentOut:
    return AgentOut(
        agent_id="a", agent_type=None, version=None, health="healthy", capabilities=caps, slots=slots,
        busy_slots=busy, free_slots=slots - busy, attempts=[], last_seen_at=None, silent_s=None,
        registered_at=None, deregistered_at=None, deregister_reason=None,
    )  # fmt: skip


def test_the_wait_reason_names_what_is_missing():
    assert describe_wait(["sql"], []) == "no healthy worker has capability sql"
    two = [_agent(["sql"]), _agent(["ci"])]
    assert describe_wait(["sql", "ci"], two) == "no healthy worker has all of the capabilities ci, sql"
    assert describe_wait(["sql"], two) == "queued: 1 healthy capable agents have 2 free slots"
    assert describe_wait(["sql"], [_agent(["sql"], busy=2)]).startswith("queued: all slots")


def _until_exited(instance: Instance) -> None:
    for _ in range(200):
        if instance.process is None or not instance.process.running():
            return
        time.sleep(0.05)
    raise AssertionError("the child did not exit")


class _Crashing(PoolSupervisor):
    def _argv(self, instance: Instance, worker_id: str) -> list[str]:
        return [sys.executable, "-c", "raise SystemExit(3)"]


def test_a_crashing_instance_is_restarted_with_a_growing_backoff(tmp_path: Path):
    # A real child that exits at once: each exit doubles the wait before the next start.
    supervisor = _Crashing([Pool("qa_tester")], api_url="http://127.0.0.1:9", logs=tmp_path, env={})
    (instance,) = supervisor.instances
    supervisor.start(instance)
    first = instance.worker_id
    assert instance.process is not None
    _until_exited(instance)
    supervisor._check(instance, now=instance.started_at + 1)
    assert instance.exits == [3] and instance.process is None
    delay1 = instance.not_before - (instance.started_at + 1)
    supervisor._check(instance, now=instance.not_before)  # the backoff is over: started again, as a new worker
    assert instance.process is not None and instance.worker_id != first
    _until_exited(instance)
    supervisor._check(instance, now=instance.started_at + 1)
    delay2 = instance.not_before - (instance.started_at + 1)
    assert (delay1, delay2) == (0.5, 1.0)


def test_tools_put_their_facts_in_the_prompt():
    analysis = load_tasks("analysis")[0]
    assert "mean=5" in data_analyst.agent.messages(analysis)[1]["content"]
    testing = load_tasks("testing")[0]
    assert "17, 18, 19, 64, 65, 66" in qa_tester.agent.messages(testing)[1]["content"]
    general = load_tasks("general")[0]
    assert "12 * 7 = 84" in general_assistant.agent.messages(general)[1]["content"]
    # The calculator evaluates arithmetic only, never code.
    assert general_assistant.calculator({"data": {"expression": "__import__('os')"}}) is None


def test_health_history_follows_heartbeats_silence_and_deregistration():
    t0 = datetime(2026, 1, 1, tzinfo=UTC)

    def at(s: float) -> datetime:
        return t0 + timedelta(seconds=s)

    events = [
        ("worker.registered", at(0)),
        ("worker.heartbeat", at(1)),
        ("worker.heartbeat", at(20)),  # 19 s of silence: degraded from 16 s, healthy again at 20 s
        ("worker.heartbeat", at(60)),  # 40 s: degraded from 35 s, unreachable from 50 s
        ("worker.deregistered", at(61)),
        ("worker.heartbeat", at(62)),  # late: does not revive a stopped worker
    ]
    changes = health_history(events, healthy_s=15, unreachable_s=30, now=at(500))
    assert [(c.health, (c.at - t0).total_seconds(), c.cause) for c in changes] == [
        ("healthy", 0, "worker.registered"),
        ("degraded", 16, "silence"),
        ("healthy", 20, "worker.heartbeat"),
        ("degraded", 35, "silence"),
        ("unreachable", 50, "silence"),
        ("healthy", 60, "worker.heartbeat"),
        ("stopped", 61, "worker.deregistered"),
    ]
    silent = health_history([("worker.registered", at(0))], healthy_s=15, unreachable_s=30, now=at(100))
    assert [c.health for c in silent] == ["healthy", "degraded", "unreachable"]
