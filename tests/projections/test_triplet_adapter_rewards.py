"""The triplet adapter's rewards: every encoding, both positional policies, links, mirrors, the final reward,
malformed values, and determinism."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from projections.triplet_adapter import AdapterConfig, Triplet, to_messages, to_triplets
from tests.projections.test_triplet_adapter_support import llm, reward_event, reward_span, sid, span

FIRST_SIBLING = AdapterConfig(reward_match="first_sibling")


def rewards_of(triplets: list[Triplet]) -> list[tuple[str, float | None, str | None]]:
    return [(t.span_id, t.reward, t.reward_source) for t in triplets]


# Encodings ----------------------------------------------------------------------------------------------------

ENCODINGS: list[tuple[str, dict[str, Any], dict[str, float]]] = [
    (
        "agentlightning.annotation",
        {"agentlightning.reward.0.name": "primary", "agentlightning.reward.0.value": 0.75},
        {"primary": 0.75},
    ),  # v0.3
    ("agentlightning.reward", {"reward": 0.75}, {"reward": 0.75}),  # v0.2, which v0.3 ignores
    ("agentlightning.annotation", {"reward": 0.75}, {"reward": 0.75}),  # v0.3's legacy branch
    ("agentops_reward_operation.task", {"agentops.task.output": {"type": "reward", "value": 0.75}}, {"reward": 0.75}),
    ("x.entity", {"agentops.entity.output": json.dumps({"type": "reward", "value": 0.75})}, {"reward": 0.75}),
    ("agentlightning.reward", {"reward": "0.75"}, {"reward": 0.75}),  # a numeric string, as pydantic reads it
]


@pytest.mark.parametrize(("name", "attributes", "dimensions"), ENCODINGS)
def test_every_reward_encoding_is_read(name: str, attributes: dict[str, Any], dimensions: dict[str, float]) -> None:
    triplets = to_triplets([llm(1, 0, 1), span(2, name, 2, 2, attributes=attributes)], [])
    assert [(t.reward, t.reward_dimensions, t.reward_source, t.reward_error) for t in triplets] == [
        (0.75, dimensions, "positional", None)
    ]


def test_a_multi_dimensional_reward_keeps_its_primary_first_and_every_dimension() -> None:
    spans = [llm(1, 0, 1), reward_span(2, 1.0, 2, dimensions={"efficiency": 0.5, "style": 0.25})]
    triplet = to_triplets(spans, [])[0]
    assert (triplet.reward, triplet.reward_dimensions) == (1.0, {"primary": 1.0, "efficiency": 0.5, "style": 0.25})


@pytest.mark.parametrize(
    "attributes",
    [
        {"agentops.task.output": {"type": "reward", "value": None}},  # no value: no reward
        {"agentops.task.output": {"type": "metric", "value": 1.0}},  # not a reward
        {"agentops.task.output": "plain text output"},  # not JSON: a task output, not a reward
        {"reward": 1.0},  # a `reward` attribute on another span name is not a reward
    ],
)
def test_spans_that_are_not_rewards_are_ignored(attributes: dict[str, Any]) -> None:
    triplets = to_triplets([llm(1, 0, 1), span(2, "task", 2, 2, attributes=attributes)], [])
    assert [(t.reward, t.reward_source, t.reward_error) for t in triplets] == [(None, None, None)]


MALFORMED: list[tuple[str, dict[str, Any]]] = [
    ("agentlightning.annotation", {"agentlightning.reward.0.name": "primary", "agentlightning.reward.0.value": "high"}),
    ("agentlightning.annotation", {"agentlightning.reward.0.value": 1.0}),  # no name
    ("agentlightning.annotation", {"agentlightning.reward.1.name": "x", "agentlightning.reward.1.value": 1.0}),  # no 0
    ("agentlightning.reward", {"reward": "NaN"}),
    ("agentlightning.reward", {"reward": True}),
    ("task", {"agentops.task.output": {"type": "reward", "value": {"score": 1}}}),
]


@pytest.mark.parametrize(("name", "attributes"), MALFORMED)
def test_a_malformed_reward_is_a_recorded_error_never_a_crash(name: str, attributes: dict[str, Any]) -> None:
    triplet = to_triplets([llm(1, 0, 1), span(2, name, 2, 2, attributes=attributes)], [])[0]
    assert (triplet.reward, triplet.reward_dimensions, triplet.reward_source) == (None, {}, "positional")
    assert triplet.reward_error is not None
    assert triplet.reward_error.startswith("malformed reward")


def test_a_malformed_reward_takes_its_call_and_the_next_reward_moves_on() -> None:
    spans = [llm(1, 0, 1), llm(2, 2, 3), reward_span(3, "high", 4), reward_span(4, 0.5, 5)]
    triplets = to_triplets(spans, [])
    assert rewards_of(triplets) == [(sid(1), 0.5, "positional"), (sid(2), None, "positional")]
    assert [t.reward_error is not None for t in triplets] == [False, True]


# Positional policies ------------------------------------------------------------------------------------------


def test_first_occurrence_gives_each_reward_to_the_latest_finished_call_without_one() -> None:
    spans = [llm(1, 0, 1), llm(2, 2, 3), reward_span(3, 1.0, 4), reward_span(4, 0.25, 5), reward_span(5, 0.125, 6)]
    # The third reward finds every call taken and is dropped.
    assert rewards_of(to_triplets(spans, [])) == [(sid(1), 0.25, "positional"), (sid(2), 1.0, "positional")]


def test_first_occurrence_skips_calls_still_running_and_counts_a_reward_at_the_end_instant() -> None:
    spans = [llm(1, 0, 1), llm(2, 2, 10), reward_span(3, 1.0, 5), reward_span(4, 0.5, 10)]
    # The first reward starts while call 2 runs: it goes to call 1. The second starts as call 2 ends: call 2.
    assert rewards_of(to_triplets(spans, [])) == [(sid(1), 1.0, "positional"), (sid(2), 0.5, "positional")]


def test_a_reward_before_any_finished_call_is_dropped() -> None:
    spans = [reward_span(1, 1.0, 0), llm(2, 1, 2)]
    assert rewards_of(to_triplets(spans, [])) == [(sid(2), None, None)]


def test_first_sibling_looks_only_among_earlier_siblings() -> None:
    spans = [
        span(1, "root", 0, 20),
        span(2, "agent-a", 0, 10, parent=1, attributes={"agent.name": "a"}),
        llm(3, 1, 2, parent=2),
        span(4, "agent-b", 3, 12, parent=1, attributes={"agent.name": "b"}),
        llm(5, 4, 5, parent=4),
        reward_span(6, 1.0, 6, parent=2),  # under agent a, after agent b's call ended
    ]
    assert rewards_of(to_triplets(spans, [])) == [(sid(3), None, None), (sid(5), 1.0, "positional")]
    assert rewards_of(to_triplets(spans, [], FIRST_SIBLING)) == [(sid(3), 1.0, "positional"), (sid(5), None, None)]


def test_first_sibling_matches_within_each_parent() -> None:
    spans = [
        span(1, "root", 0, 100),
        span(2, "turn-1", 0, 40, parent=1),
        llm(3, 1, 2, parent=2),
        llm(4, 3, 4, parent=2),
        reward_span(5, 1.0, 5, parent=2),
        reward_span(6, 0.5, 6, parent=2),
        span(7, "turn-2", 50, 90, parent=1),
        llm(8, 51, 52, parent=7),
        reward_span(9, 0.25, 53, parent=7),
    ]
    assert rewards_of(to_triplets(spans, [], FIRST_SIBLING)) == [
        (sid(3), 0.5, "positional"),
        (sid(4), 1.0, "positional"),
        (sid(8), 0.25, "positional"),
    ]


# Links --------------------------------------------------------------------------------------------------------


def test_a_reward_span_linked_by_span_id_binds_to_that_call_and_the_positional_one_moves_on() -> None:
    spans = [llm(1, 0, 1), llm(2, 2, 3), reward_span(3, 1.0, 4, links=[("span_id", sid(1))]), reward_span(4, 0.5, 5)]
    # Positionally the first reward would go to call 2; its link sends it to call 1, and the second reward,
    # which would have gone to call 1, now takes call 2.
    assert rewards_of(to_triplets(spans, [])) == [(sid(1), 1.0, "link"), (sid(2), 0.5, "positional")]


@pytest.mark.parametrize("key", ["response_id", "gen_ai.response.id"])
def test_a_reward_span_linked_by_response_id_binds_to_that_call(key: str) -> None:
    spans = [
        llm(1, 0, 1, response_id="r-1"),
        llm(2, 2, 3, response_id="r-2"),
        reward_span(3, 1.0, 4, links=[(key, "r-1")]),
    ]
    assert rewards_of(to_triplets(spans, [])) == [(sid(1), 1.0, "link"), (sid(2), None, None)]


def test_a_linked_reward_binds_even_before_the_call_ends_and_under_first_sibling() -> None:
    spans = [
        span(1, "a", 0, 10),
        llm(2, 1, 9, parent=1),
        span(3, "b", 11, 20),
        reward_span(4, 1.0, 12, parent=3, links=[("span_id", sid(2))]),
    ]
    assert rewards_of(to_triplets(spans, [], FIRST_SIBLING)) == [(sid(2), 1.0, "link")]


def test_reward_events_bind_by_span_id_or_response_id_and_take_precedence() -> None:
    spans = [llm(1, 0, 1, response_id="r-1"), llm(2, 2, 3, response_id="r-2"), reward_span(3, 0.5, 4)]
    by_span = to_triplets(spans, [reward_event(0.9, span_id=sid(2))])
    assert rewards_of(by_span) == [(sid(1), 0.5, "positional"), (sid(2), 0.9, "link")]
    by_response = to_triplets(spans, [reward_event(0.9, response_id="r-2", dimensions={"format": 1.0})])
    assert rewards_of(by_response) == [(sid(1), 0.5, "positional"), (sid(2), 0.9, "link")]
    assert by_response[1].reward_dimensions == {"reward": 0.9, "format": 1.0}


def test_a_link_to_a_duplicate_span_of_a_call_binds_to_the_call() -> None:
    spans = [llm(1, 0, 10, response_id="r-1"), llm(2, 1, 9, parent=1), llm(3, 11, 12, response_id="r-1")]
    assert rewards_of(to_triplets(spans, [reward_event(1.0, span_id=sid(2))])) == [(sid(1), 1.0, "link")]
    assert rewards_of(to_triplets(spans, [reward_event(0.5, span_id=sid(3))])) == [(sid(1), 0.5, "link")]


def test_the_last_link_bound_reward_of_a_call_wins() -> None:
    spans = [
        llm(1, 0, 1),
        reward_span(2, 0.1, 2, links=[("span_id", sid(1))]),
        reward_span(3, 0.2, 3, links=[("span_id", sid(1))]),
    ]
    assert rewards_of(to_triplets(spans, [])) == [(sid(1), 0.2, "link")]
    # Events come after spans.
    assert rewards_of(to_triplets(spans, [reward_event(0.3, span_id=sid(1))])) == [(sid(1), 0.3, "link")]


def test_a_link_to_a_call_without_a_triplet_drops_the_reward() -> None:
    # Call 2 has no token ids and is skipped: its reward must not land on call 1.
    spans = [llm(1, 0, 1), llm(2, 2, 3, prompt_ids=[], response_ids=[], response_id="r-2")]
    config = AdapterConfig(skip_empty_token_spans=True)
    assert rewards_of(to_triplets(spans, [reward_event(1.0, span_id=sid(2))], config)) == [(sid(1), None, None)]
    assert rewards_of(to_triplets(spans, [reward_event(1.0, response_id="r-2")], config)) == [(sid(1), None, None)]
    linked = [*spans, reward_span(3, 1.0, 4, links=[("span_id", sid(2))])]
    assert rewards_of(to_triplets(linked, [], config)) == [(sid(1), None, None)]


def test_a_link_naming_no_call_is_ignored() -> None:
    # An unknown span id on an event: the reward is unlinked, so it is the final reward.
    spans = [llm(1, 0, 1), llm(2, 2, 3)]
    assert rewards_of(to_triplets(spans, [reward_event(1.0, span_id=sid(99))])) == [
        (sid(1), None, None),
        (sid(2), 1.0, "final"),
    ]
    # A reward span linked to a trace id (not a call key): matched positionally.
    linked = [*spans, reward_span(3, 0.5, 4, links=[("trace_id", "0" * 32)])]
    assert rewards_of(to_triplets(linked, [])) == [(sid(1), None, None), (sid(2), 0.5, "positional")]


# Mirrors and the final reward ---------------------------------------------------------------------------------


def test_an_event_mirroring_a_reward_span_is_skipped() -> None:
    spans = [llm(1, 0, 1), reward_span(2, 0.3, 1.5), llm(3, 2, 3)]
    # Were the event not recognised as the span's mirror, it would be the final reward of call 3.
    assert rewards_of(to_triplets(spans, [reward_event(0.3, span_id=sid(2))])) == [
        (sid(1), 0.3, "positional"),
        (sid(3), None, None),
    ]


def test_one_call_and_one_unlinked_reward_event_as_the_math_agent_writes_them() -> None:
    triplets = to_triplets([llm(1, 0, 1, response_id="chatcmpl-1")], [reward_event(1.0)])
    assert [(t.reward, t.reward_dimensions, t.reward_source) for t in triplets] == [(1.0, {"reward": 1.0}, "final")]


def test_the_last_unlinked_event_is_final_and_overwrites_a_positional_reward() -> None:
    spans = [llm(1, 0, 1), llm(2, 2, 3), reward_span(3, 0.5, 4)]
    events = [reward_event(0.1), reward_event(0.2, name="score", dimensions={"len": 3.0})]
    triplets = to_triplets(spans, events)
    assert rewards_of(triplets) == [(sid(1), None, None), (sid(2), 0.2, "final")]
    assert triplets[1].reward_dimensions == {"score": 0.2, "len": 3.0}


def test_the_final_reward_never_overwrites_a_link_bound_last_call() -> None:
    spans = [llm(1, 0, 1), llm(2, 2, 3)]
    events = [reward_event(0.9, span_id=sid(2)), reward_event(0.1)]
    assert rewards_of(to_triplets(spans, events)) == [(sid(1), None, None), (sid(2), 0.9, "link")]


def test_the_final_reward_clears_an_error_it_overwrites() -> None:
    triplet = to_triplets([llm(1, 0, 1), reward_span(2, "bad", 2)], [reward_event(1.0)])[0]
    assert (triplet.reward, triplet.reward_source, triplet.reward_error) == (1.0, "final", None)


def test_rewards_without_calls_give_no_triplets() -> None:
    assert to_triplets([reward_span(1, 1.0, 0), span(2, "tool", 1, 2)], [reward_event(1.0)]) == []


# Determinism --------------------------------------------------------------------------------------------------


def test_shuffled_spans_give_equal_triplets() -> None:
    spans = [
        span(1, "session", 0, 100),
        span(2, "agent", 5, 95, parent=1, attributes={"agent.name": "solver"}),
        llm(3, 10, 20, parent=1, response_id="r-3"),
        reward_span(4, 1.0, 21, parent=1),
        llm(5, 30, 40, parent=2, response_id="r-5"),
        llm(6, 31, 39, parent=5),
        reward_span(7, 0.5, 41, parent=9),
        llm(8, 50, None, parent=9, response_id="r-8"),
        span(10, "tool", 60, 70, parent=2),
    ]
    events = [reward_event(0.7, response_id="r-3"), reward_event(0.2)]
    expected = to_triplets(spans, events)
    # Call 3 is link-bound, so reward 4 (which would have been its) finds no other finished call and is dropped;
    # reward 7 goes to call 5 (its nested span 6 is the same call); the final event lands on call 8.
    assert rewards_of(expected) == [(sid(3), 0.7, "link"), (sid(5), 0.5, "positional"), (sid(8), 0.2, "final")]
    shuffler = random.Random(10)
    for _ in range(20):
        shuffled = list(spans)
        shuffler.shuffle(shuffled)
        again = to_triplets(shuffled, events)
        assert again == expected
        assert json.dumps([t.as_dict() for t in again]) == json.dumps([t.as_dict() for t in expected])


def test_first_occurrence_breaks_start_time_ties_in_depth_first_order() -> None:
    # A zero-length call and a reward at the same instant: the reward counts as after the call only when it comes
    # later in depth-first (here: sequence) order, as Agent Lightning's stable sort does.
    call_first = [llm(1, 1, 1), reward_span(2, 1.0, 1)]
    assert rewards_of(to_triplets(call_first, [])) == [(sid(1), 1.0, "positional")]
    reward_first = [llm(1, 1, 1), span(2, "agentlightning.reward", 1, 1, attributes={"reward": 1.0}, seq=0)]
    assert rewards_of(to_triplets(reward_first, [])) == [(sid(1), None, None)]


WEIRD: list[Any] = [
    None,
    True,
    0,
    -1,
    2.5,
    "",
    "x",
    "0.5",
    "nan",
    "[1, 2]",
    "{}",
    [],
    [1, 2],
    [1, "a"],
    [True],
    {"a": 1},
]
KEYS = [
    "agentlightning.reward.0.name",
    "agentlightning.reward.0.value",
    "agentlightning.reward.1.value",
    "agentlightning.reward",
    "agentlightning.link.0.key_match",
    "agentlightning.link.0.value_match",
    "agentops.task.output",
    "reward",
    "prompt_token_ids",
    "response_token_ids",
    "gen_ai.response.id",
    "gen_ai.prompt",
    "gen_ai.prompt.0.content",
    "gen_ai.prompt.0",
    "gen_ai.completion.0.content",
    "logprobs.content",
    "agent.name",
    "gen_ai.request.functions.0.parameters",
]
NAMES = ["openai.chat.completion", "chat m", "agentlightning.annotation", "agentlightning.reward", "agent", "tool"]


def test_random_corrupt_traces_never_raise_and_stay_deterministic() -> None:
    rng = random.Random(2026)
    for _ in range(300):
        count = rng.randint(1, 12)
        spans = []
        for number in range(1, count + 1):
            attributes = {key: rng.choice(WEIRD) for key in rng.sample(KEYS, rng.randint(0, 6))}
            if rng.random() < 0.3:
                attributes["agentlightning.link.0.key_match"] = rng.choice(["span_id", "response_id"])
                attributes["agentlightning.link.0.value_match"] = sid(rng.randint(1, count + 2))
            start = rng.uniform(0, 20)
            end = rng.choice([None, start + rng.uniform(-2, 10)])
            parent = rng.choice([None, rng.randint(1, count + 3)])
            spans.append(span(number, rng.choice(NAMES), start, end, parent=parent, attributes=attributes))
        events = [reward_event(rng.uniform(0, 1), span_id=rng.choice([None, sid(rng.randint(1, count))]))]
        config = AdapterConfig(
            reward_match=rng.choice(["first_occurrence", "first_sibling"]),
            skip_empty_token_spans=rng.random() < 0.5,
            dedup_llm_call=rng.random() < 0.8,
        )
        expected = to_triplets(spans, events, config)
        json.dumps([t.as_dict() for t in expected])
        assert all(t.reward is None or t.reward_error is None for t in expected)
        rng.shuffle(spans)
        assert to_triplets(spans, events, config) == expected
        json.dumps(to_messages(spans, config))
