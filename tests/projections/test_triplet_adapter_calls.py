"""The triplet adapter's LLM-call matching and token ids (payloads and trace-to-messages:
``test_triplet_adapter_payloads.py``)."""

from __future__ import annotations

import json

import pytest

from projections.triplet_adapter import AdapterConfig, to_triplets
from projections.triplet_adapter.attributes import first_int_list
from projections.triplet_adapter.payload import PROMPT_TOKEN_KEYS, RESPONSE_TOKEN_KEYS
from schemas.spans import SpanRecorded
from tests.projections.test_triplet_adapter_support import llm, sid, span

# Matching -----------------------------------------------------------------------------------------------------


def test_the_default_pattern_matches_agent_lightning_and_semantic_convention_names() -> None:
    names = [
        "openai.chat.completion",  # 1: Agent Lightning's default, and what examples/math_agent.py writes
        "openai.chat.completion.create",  # 2: searched, not anchored
        "chat Qwen2.5-7B",  # 3: GenAI semantic conventions
        "text_completion smollm",  # 4
        "chat_model.llm",  # 5: LangChain
        "embeddings text-embedding-3",  # not a call
        "chatbot.step",  # not a call ("chat" without the space)
        "execute_tool search",  # not a call
    ]
    spans = [llm(i, i, i + 0.5, name=name, response_id=f"r{i}") for i, name in enumerate(names, start=1)]
    assert [t.span_id for t in to_triplets(spans, [])] == [sid(i) for i in range(1, 6)]


def test_a_custom_pattern_replaces_the_default() -> None:
    spans = [llm(1, 0, 1, name="openai.chat.completion"), llm(2, 2, 3, name="my.llm.call")]
    triplets = to_triplets(spans, [], AdapterConfig(llm_call_match=r"^my\.llm"))
    assert [(t.span_id, t.prompt_token_ids, t.response_token_ids) for t in triplets] == [(sid(2), (2, 0), (2, 1))]


def test_a_bad_configuration_fails_when_configured() -> None:
    with pytest.raises(ValueError, match="reward_match"):
        AdapterConfig(reward_match="last")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unterminated"):
        AdapterConfig(llm_call_match="(open")


AGENT_ATTRIBUTES = [
    ({"agent.name": "solver"}, "span"),  # OpenAI Agents SDK
    ({"gen_ai.agent.name": "solver"}, "invoke_agent solver"),  # GenAI semantic conventions
    ({"agentops.span.kind": "agent", "operation.name": "solver"}, "solver.agent"),  # AgentOps @agent
    ({"recipient_agent_type": "solver"}, "autogen process"),  # AutoGen
    ({"langchain.chain.type": "solver"}, "LangGraph"),  # LangGraph
    ({"executor.id": "solver"}, "executor.process"),  # agent-framework
    ({"type": "agent", "agentlightning.operation.input.name": "solver"}, "weave.op"),  # Weave
    ({"lc_name": "solver"}, "langchain.Chain.solver"),  # Weave + LangChain
]


@pytest.mark.parametrize(("attributes", "name"), AGENT_ATTRIBUTES)
def test_agent_names_come_from_each_frameworks_attribute(attributes: dict[str, str], name: str) -> None:
    spans = [span(1, name, 0, 10, attributes=attributes), llm(2, 1, 2, parent=1), llm(3, 20, 21)]
    everything = to_triplets(spans, [])
    assert [(t.span_id, t.agent_name) for t in everything] == [(sid(2), "solver"), (sid(3), None)]
    # With an agent filter, a call under no agent is dropped, as is a call under another agent.
    assert [t.span_id for t in to_triplets(spans, [], AdapterConfig(agent_match="^sol"))] == [sid(2)]
    assert to_triplets(spans, [], AdapterConfig(agent_match="^coder$")) == []


def test_agentops_operation_name_counts_only_on_agent_spans() -> None:
    spans = [span(1, "tool.task", 0, 10, attributes={"operation.name": "solver"}), llm(2, 1, 2, parent=1)]
    assert [t.agent_name for t in to_triplets(spans, [])] == [None]


def test_a_non_matching_agent_inside_a_matching_one_leaves_the_matching_subtree() -> None:
    spans = [
        span(1, "outer", 0, 100, attributes={"agent.name": "planner"}),
        llm(2, 1, 2, parent=1),
        span(3, "inner", 10, 50, parent=1, attributes={"agent.name": "critic"}),
        llm(4, 11, 12, parent=3),
    ]
    triplets = to_triplets(spans, [], AdapterConfig(agent_match="planner"))
    assert [(t.span_id, t.agent_name) for t in triplets] == [(sid(2), "planner")]
    assert [(t.span_id, t.agent_name) for t in to_triplets(spans, [])] == [(sid(2), "planner"), (sid(4), "critic")]


@pytest.mark.parametrize(
    "judge",
    [
        {"agentops.task.output": {"type": "reward", "value": 1.0}},  # AgentOps reward span around the judge
        {"agentlightning.reward.0.name": "primary", "agentlightning.reward.0.value": 1.0},  # v0.3 annotation
    ],
)
def test_calls_inside_a_reward_span_are_excluded(judge: dict[str, object]) -> None:
    spans = [llm(1, 0, 1), span(2, "judge", 2, 10, attributes=judge), llm(3, 3, 4, parent=2)]
    assert [t.span_id for t in to_triplets(spans, [])] == [sid(1)]
    kept = to_triplets(spans, [], AdapterConfig(exclude_llm_call_in_reward=False))
    assert [t.span_id for t in kept] == [sid(1), sid(3)]


def test_calls_inside_a_reward_operation_are_excluded_and_the_operation_is_no_reward() -> None:
    operation = {"agentlightning.operation.name": "agentlightning.reward"}
    spans = [llm(1, 0, 1), span(2, "agentlightning.operation", 2, 10, attributes=operation), llm(3, 3, 4, parent=2)]
    triplets = to_triplets(spans, [])
    assert [(t.span_id, t.reward) for t in triplets] == [(sid(1), None)]


def test_nested_spans_of_one_call_count_once() -> None:
    # The client's span wraps the HTTP instrumentation's span of the same call, which has no response id.
    spans = [llm(1, 0, 10, response_id="resp-1"), llm(2, 1, 9, parent=1)]
    assert [t.span_id for t in to_triplets(spans, [])] == [sid(1)]
    assert [t.span_id for t in to_triplets(spans, [], AdapterConfig(dedup_llm_call=False))] == [sid(1), sid(2)]


def test_a_nested_call_with_its_own_response_id_is_another_call() -> None:
    spans = [llm(1, 0, 10, response_id="resp-1"), llm(2, 1, 9, parent=1, response_id="resp-2")]
    assert [t.response_id for t in to_triplets(spans, [])] == ["resp-1", "resp-2"]


def test_a_repeated_response_id_counts_once() -> None:
    # The proxy and the client both recorded the call: same response id, different spans, different places.
    spans = [span(1, "agent", 0, 10), llm(2, 1, 2, parent=1, response_id="resp-1"), llm(3, 1, 2, response_id="resp-1")]
    assert [t.span_id for t in to_triplets(spans, [])] == [sid(2)]
    assert len(to_triplets(spans, [], AdapterConfig(dedup_llm_call=False))) == 2


def test_a_kept_call_takes_the_token_ids_it_lacks_from_its_duplicates() -> None:
    logprobs = json.dumps([{"token": "4", "logprob": -0.5, "bytes": [52], "top_logprobs": []}])
    # The agent's client span comes first without token ids; the proxy's span of the same response has them.
    client = llm(1, 0, 10, prompt_ids=[], response_ids=[], response_id="r-1")
    proxy = llm(2, 1, 9, prompt_ids=[5, 6], response_ids=[7], response_id="r-1", extra={"logprobs.content": logprobs})
    triplets = to_triplets([client, proxy], [], AdapterConfig(skip_empty_token_spans=True))
    assert [(t.span_id, t.prompt_token_ids, t.response_token_ids) for t in triplets] == [(sid(1), (5, 6), (7,))]
    assert triplets[0].logprobs == json.loads(logprobs)
    # The same for the HTTP span nested in the client's span without a response id of its own.
    nested = llm(3, 1, 9, parent=1, prompt_ids=[8], response_ids=[9])
    assert [(t.prompt_token_ids, t.response_token_ids) for t in to_triplets([client, nested], [])] == [((8,), (9,))]
    # A call that has its own token ids keeps them.
    own = llm(1, 0, 10, prompt_ids=[1], response_ids=[2], response_id="r-1")
    assert [(t.prompt_token_ids, t.response_token_ids) for t in to_triplets([own, proxy], [])] == [((1,), (2,))]


def test_skip_empty_token_spans_drops_calls_without_both_token_lists() -> None:
    spans = [llm(1, 0, 1), llm(2, 2, 3, prompt_ids=[]), llm(3, 4, 5, response_ids=[])]
    assert [(t.span_id, t.response_token_ids) for t in to_triplets(spans, [])] == [
        (sid(1), (1, 1)),
        (sid(2), (2, 1)),
        (sid(3), ()),
    ]
    skipped = to_triplets(spans, [], AdapterConfig(skip_empty_token_spans=True))
    assert [(t.index, t.span_id) for t in skipped] == [(0, sid(1))]


# Token ids ----------------------------------------------------------------------------------------------------


def test_token_ids_fall_back_through_the_weave_keys() -> None:
    attributes = {
        "agentlightning.operation.output.prompt_token_ids": [7, 8, 9],
        "agentlightning.operation.output.choices.0.token_ids": [10, 11],
    }
    one = span(1, "openai.chat.completion", 0, 1, attributes=attributes)
    triplet = to_triplets([one], [])[0]
    assert (triplet.prompt_token_ids, triplet.response_token_ids) == ((7, 8, 9), (10, 11))
    vllm = {"agentlightning.operation.output.choices.0.provider_specific_fields.token_ids": [12]}
    assert to_triplets([span(2, "openai.chat.completion", 0, 1, attributes=vllm)], [])[0].response_token_ids == (12,)


def test_invalid_token_ids_fall_through_to_the_next_key() -> None:
    attributes = {
        "prompt_token_ids": "1,2,3",  # a string, not a list
        "agentlightning.prompt_token_ids": [1, "2"],  # not all ints
        "agentlightning.operation.output.prompt_token_ids": [5, 6],
        "response_token_ids": [True, False],  # booleans are not token ids
        "agentlightning.response_token_ids": [4],
    }
    triplet = to_triplets([span(1, "openai.chat.completion", 0, 1, attributes=attributes)], [])[0]
    assert (triplet.prompt_token_ids, triplet.response_token_ids) == ((5, 6), (4,))


def test_missing_token_ids_are_empty() -> None:
    triplet = to_triplets([span(1, "chat m", 0, 1)], [])[0]
    assert (triplet.prompt_token_ids, triplet.response_token_ids, triplet.logprobs) == ((), (), None)


def test_token_ids_given_as_tuples_are_read() -> None:
    # OTel SDK spans store int lists as tuples; a span built without validation keeps them.
    attributes = {"prompt_token_ids": (1, 2), "response_token_ids": (3,)}
    built = SpanRecorded.model_construct(**{**llm(1, 0, 1).model_dump(), "attributes": attributes})
    triplet = to_triplets([built], [])[0]
    assert (triplet.prompt_token_ids, triplet.response_token_ids) == ((1, 2), (3,))
    assert first_int_list({"prompt_token_ids": (4, 5)}, PROMPT_TOKEN_KEYS) == (4, 5)
    assert first_int_list({}, RESPONSE_TOKEN_KEYS) == ()


def test_logprobs_are_read_from_their_json_string() -> None:
    entries = [{"token": "4", "logprob": -0.25, "bytes": [52], "top_logprobs": []}]
    good = llm(1, 0, 1, extra={"logprobs.content": json.dumps(entries)})
    broken = llm(2, 2, 3, extra={"logprobs.content": "[{not json"})
    assert [t.logprobs for t in to_triplets([good, broken], [])] == [entries, None]
