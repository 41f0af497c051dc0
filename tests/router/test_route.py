"""``Router.route`` on a given state (no database): which rollouts are routed, among which types, with what."""

from __future__ import annotations

import time

from producers.router import Router, RouterState, StaticTable
from producers.router_policy import Evidence, Prior
from schemas import RolloutEnqueued

TABLE = StaticTable({"python": ("data_analyst", "qa_tester", "web_developer"), "web": ("web_developer",)})


def router_on(state: RouterState, **kw) -> Router:
    router = Router(table=TABLE, cache_s=3600, **kw)
    router._cached = (time.monotonic(), state)  # the state it would have read
    return router


def rollout(rollout_id: str, **kw) -> RolloutEnqueued:
    return RolloutEnqueued(rollout_id=rollout_id, input=None, correlation_id="req-1", source="/agl/api", **kw)


async def test_only_rollouts_naming_a_known_kind_without_capabilities_are_routed():
    router = router_on(RouterState({}, {}))
    events = [
        rollout("ro-1", metadata={"task_kind": "python"}),
        rollout("ro-2", metadata={"task_kind": "python"}, required_capabilities=("gpu",)),
        rollout("ro-3", metadata={"task_kind": "astrology"}),
        rollout("ro-4", metadata={"task_kind": 7}),
        rollout("ro-5"),
    ]
    out, decisions = await router.route(None, events)  # type: ignore[arg-type] # the cached state is used
    assert list(decisions) == ["ro-1"]
    decision = decisions["ro-1"]
    assert out[0].required_capabilities == decision.required_capabilities == (f"agent:{decision.agent_type}",)
    assert out[1:] == events[1:] and out[0].model_copy(update={"required_capabilities": ()}) == events[0]
    assert (decision.correlation_id, decision.source, decision.prior_alpha) == ("req-1", "/agl/api", 1.0)


async def test_types_with_a_live_worker_are_preferred_and_evidence_decides_among_them():
    evidence = {("python", "qa_tester"): Evidence(0, 40), ("python", "web_developer"): Evidence(40, 0)}
    # web_developer is the best on evidence but has no live worker; data_analyst has none either.
    router = router_on(RouterState(evidence, {"qa_tester": 0, "data_analyst": 2}), prior=Prior(2, 3))
    _, decisions = await router.route(None, [rollout(f"ro-{i}", metadata={"task_kind": "python"}) for i in range(20)])  # type: ignore[arg-type]
    assert {d.candidates for d in decisions.values()} == {("data_analyst", "qa_tester")}
    assert {d.agent_type for d in decisions.values()} == {"data_analyst"}  # qa_tester's evidence is all failures
    assert {(d.policy, d.prior_alpha, d.prior_beta) for d in decisions.values()} == {("thompson", 2.0, 3.0)}
    # No candidate has a live worker: all of them are candidates (the rollout waits for one, visibly).
    router = router_on(RouterState({}, {"security_expert": 4}))
    _, decisions = await router.route(None, [rollout("ro-x", metadata={"task_kind": "python"})])  # type: ignore[arg-type]
    assert decisions["ro-x"].candidates == ("data_analyst", "qa_tester", "web_developer")


async def test_off_takes_slots_decision_by_decision():
    router = router_on(RouterState({}, {"data_analyst": 2, "qa_tester": 1, "web_developer": 0}), policy="off")
    events = [rollout(f"ro-{i}", metadata={"task_kind": "python"}) for i in range(3)]
    _, decisions = await router.route(None, events)  # type: ignore[arg-type]
    assert decisions["ro-0"].samples == {"data_analyst": 2.0, "qa_tester": 1.0, "web_developer": 0.0}
    assert sorted(d.agent_type for d in decisions.values()) == ["data_analyst", "data_analyst", "qa_tester"]
