"""The triplet adapter's LLM-call matching, token ids, payloads and trace-to-messages."""

from __future__ import annotations

import json

import pytest

from projections.triplet_adapter import DEFAULT_LLM_CALL_MATCH, AdapterConfig, to_messages, to_triplets
from projections.triplet_adapter.attributes import first_int_list, unflatten
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


# Payloads -----------------------------------------------------------------------------------------------------


def test_payloads_come_from_the_gen_ai_families() -> None:
    attributes = {
        "gen_ai.system": "openai",
        "gen_ai.request.model": "smollm",
        "gen_ai.request.temperature": 0.0,
        "gen_ai.request.max_tokens": 16,
        "gen_ai.response.id": "chatcmpl-1",
        "gen_ai.response.model": "smollm-135m",
        "gen_ai.response.finish_reasons": ["stop"],
        "gen_ai.prompt.0.role": "system",
        "gen_ai.prompt.0.content": "You are a calculator.",
        "gen_ai.prompt.1.role": "user",
        "gen_ai.prompt.1.content": "What is 7 + 5?",
        "gen_ai.completion.0.role": "assistant",
        "gen_ai.completion.0.content": "12",
        "gen_ai.completion.0.finish_reason": "stop",
        "prompt_token_ids": [1, 2, 3],
        "response_token_ids": [4],
    }
    triplet = to_triplets([span(1, "openai.chat.completion", 0, 1, attributes=attributes)], [])[0]
    assert triplet.prompt == [
        {"role": "system", "content": "You are a calculator."},
        {"role": "user", "content": "What is 7 + 5?"},
    ]
    assert triplet.response == [{"role": "assistant", "content": "12", "finish_reason": "stop"}]
    assert triplet.request == {"model": "smollm", "temperature": 0.0, "max_tokens": 16}
    assert triplet.response_meta == {"id": "chatcmpl-1", "model": "smollm-135m", "finish_reasons": ["stop"]}
    assert (triplet.response_id, triplet.model) == ("chatcmpl-1", "smollm-135m")
    assert (triplet.prompt_token_ids, triplet.response_token_ids) == ((1, 2, 3), (4,))


def test_payloads_fall_back_to_weave_operation_attributes() -> None:
    attributes = {
        "agentlightning.operation.input.messages.0.role": "user",
        "agentlightning.operation.input.messages.0.content": "hi",
        "agentlightning.operation.input.temperature": 0.5,
        "agentlightning.operation.output.id": "resp-w",
        "agentlightning.operation.output.choices.0.message.content": "hello",
        "agentlightning.operation.output.prompt_token_ids": [1],
        "agentlightning.operation.output.model": "w",
    }
    triplet = to_triplets([span(1, "openai.chat.completion", 0, 1, attributes=attributes)], [])[0]
    assert triplet.prompt == [{"role": "user", "content": "hi"}]
    assert triplet.response == [{"message": {"content": "hello"}}]
    assert triplet.request == {"temperature": 0.5}  # messages are the prompt, not request metadata
    assert triplet.response_meta == {"id": "resp-w", "model": "w"}  # choices and token ids are taken out
    assert triplet.response_id == "resp-w"


def test_payloads_read_the_semantic_conventions_json_messages() -> None:
    attributes = {
        "gen_ai.input.messages": json.dumps([{"role": "user", "parts": [{"type": "text", "content": "2+2?"}]}]),
        "gen_ai.output.messages": [{"role": "assistant", "parts": [{"type": "text", "content": "4"}]}],
    }
    triplet = to_triplets([span(1, "chat m", 0, 1, attributes=attributes)], [])[0]
    assert triplet.prompt == [{"role": "user", "parts": [{"type": "text", "content": "2+2?"}]}]
    assert triplet.response == [{"role": "assistant", "parts": [{"type": "text", "content": "4"}]}]
    conversation = to_messages([span(1, "chat m", 0, 1, attributes=attributes)])[0]
    assert conversation["messages"] == [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]


def test_multimodal_prompts_give_their_image_urls_in_order() -> None:
    parts = [
        {"type": "text", "text": "What is in these pictures?"},
        {"type": "image_url", "image_url": {"url": "https://example.org/cat.png"}},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
    ]
    as_json_string = {"gen_ai.prompt.0.role": "user", "gen_ai.prompt.0.content": json.dumps(parts)}
    flattened = {
        "gen_ai.prompt.0.role": "system",
        "gen_ai.prompt.0.content": "Describe images.",
        "gen_ai.prompt.1.role": "user",
        "gen_ai.prompt.1.content.0.type": "image_url",
        "gen_ai.prompt.1.content.0.image_url.url": "https://example.org/dog.jpg",
        "gen_ai.prompt.1.content.1.type": "text",
        "gen_ai.prompt.1.content.1.text": "and this?",
    }
    spans = [
        span(1, "openai.chat.completion", 0, 1, attributes=as_json_string),
        span(2, "openai.chat.completion", 2, 3, attributes=flattened),
        llm(3, 4, 5),
    ]
    assert [t.image_urls for t in to_triplets(spans, [])] == [
        ("https://example.org/cat.png", "data:image/png;base64,iVBORw0KGgo="),
        ("https://example.org/dog.jpg",),
        (),
    ]


# Trace to messages --------------------------------------------------------------------------------------------


def test_trace_to_messages_gives_one_chat_payload_per_call_with_tools() -> None:
    call = {
        "gen_ai.request.functions.0.name": "search",
        "gen_ai.request.functions.0.description": "web search",
        "gen_ai.request.functions.0.parameters": json.dumps({"type": "object", "properties": {}}),
        "gen_ai.prompt.0.role": "user",
        "gen_ai.prompt.0.content": "weather?",
        "gen_ai.prompt.1.tool_call_id": "call-0",  # no role: a tool result
        "gen_ai.prompt.1.content": "sunny",
        "gen_ai.prompt.2.content": "no role, no hint: dropped",
        "gen_ai.completion.0.role": "assistant",
        "gen_ai.completion.0.content": "Let me search.",
        "gen_ai.response.id": "resp-1",
    }
    tool = {
        "tool.name": "search",
        "tool.parameters": '{"q": "weather"}',
        "tool.call.id": "call-1",
        "tool.call.type": "function",
    }
    spans = [
        span(1, "openai.chat.completion", 0, 5, attributes=call),
        span(2, "tool", 1, 2, parent=1, attributes=tool),
        llm(3, 6, 7),
    ]
    conversations = to_messages(spans)
    assert conversations == [
        {
            "messages": [
                {"role": "user", "content": "weather?"},
                {"role": "tool", "content": "sunny", "tool_call_id": "call-0"},
                {
                    "role": "assistant",
                    "content": "Let me search.",
                    "tool_calls": [
                        {
                            "id": "call-1",
                            "type": "function",
                            "function": {"name": "search", "arguments": '{"q": "weather"}'},
                        }
                    ],
                },
            ],
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "search",
                        "description": "web search",
                        "parameters": {"type": "object", "properties": {}},
                    },
                }
            ],
            "span_id": sid(1),
        },
        {
            "messages": [{"role": "user", "content": "question 3"}, {"role": "assistant", "content": "answer 3"}],
            "tools": None,
            "span_id": sid(3),
        },
    ]


def test_trace_to_messages_follows_the_matching_configuration() -> None:
    spans = [span(1, "agent", 0, 10, attributes={"agent.name": "a"}), llm(2, 1, 2, parent=1), llm(3, 20, 21)]
    assert [c["span_id"] for c in to_messages(spans, AdapterConfig(agent_match="^a$"))] == [sid(2)]


def test_a_family_written_as_one_json_attribute_is_read() -> None:
    messages = [{"role": "user", "content": "7 + 5?"}]
    attributes = {"gen_ai.prompt": json.dumps(messages), "gen_ai.completion": "12"}
    triplet = to_triplets([span(1, "openai.chat.completion", 0, 1, attributes=attributes)], [])[0]
    assert (triplet.prompt, triplet.response) == (messages, "12")


def test_messages_read_a_prompt_keyed_by_numbers_beside_other_keys() -> None:
    attributes = {
        "gen_ai.prompt.0.role": "user",
        "gen_ai.prompt.0.content": "hi",
        "gen_ai.prompt.prompt_filter_results.0.hate": "safe",
        "gen_ai.completion.0.role": "assistant",
        "gen_ai.completion.0.content": "hello",
    }
    conversation = to_messages([span(1, "openai.chat.completion", 0, 1, attributes=attributes)])[0]
    assert conversation["messages"] == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]


@pytest.mark.parametrize(
    ("flat", "expected"),
    [
        ({"0.a": 1, "1.a": 2}, [{"a": 1}, {"a": 2}]),
        ({"0": "x", "2": "y"}, {"0": "x", "2": "y"}),  # not 0..n-1: stays a dict
        ({"\u00b2": "sup", "1": "one"}, {"\u00b2": "sup", "1": "one"}),  # a digit int() refuses: no crash
        ({"a": 1, "a.b": 2}, {"a": {"b": 2}}),  # leaf then prefix: the later wins
        ({"a.b": 2, "a": 1}, {"a": 1}),
        ({"": 1, "0": 2}, {"": 1, "0": 2}),
    ],
)
def test_unflattening_follows_agent_lightning_and_never_raises(flat: dict[str, object], expected: object) -> None:
    assert unflatten(flat) == expected


def test_configurations_are_hashable_and_json_able() -> None:
    config = AdapterConfig(agent_match="solver", reward_match="first_sibling")
    assert hash(config) == hash(AdapterConfig(agent_match="solver", reward_match="first_sibling"))
    assert config != AdapterConfig()
    assert json.loads(json.dumps(config.as_dict())) == {
        "llm_call_match": DEFAULT_LLM_CALL_MATCH,
        "agent_match": "solver",
        "repair_hierarchy": True,
        "exclude_llm_call_in_reward": True,
        "reward_match": "first_sibling",
        "skip_empty_token_spans": False,
        "dedup_llm_call": True,
    }


def test_a_triplet_as_a_dict_is_json() -> None:
    entries = [{"token": "a", "logprob": -1.0, "bytes": [97], "top_logprobs": []}]
    triplet = to_triplets([llm(1, 0, 1.5, response_id="r-1", extra={"logprobs.content": json.dumps(entries)})], [])[0]
    assert json.loads(json.dumps(triplet.as_dict())) == {
        "index": 0,
        "span_id": sid(1),
        "response_id": "r-1",
        "agent_name": None,
        "prompt_token_ids": [1, 0],
        "response_token_ids": [1, 1],
        "logprobs": entries,
        "prompt": [{"role": "user", "content": "question 1"}],
        "response": [{"role": "assistant", "content": "answer 1"}],
        "reward": None,
        "reward_dimensions": {},
        "reward_source": None,
        "reward_error": None,
        "request": {"model": "m"},
        "response_meta": {"id": "r-1"},
        "start_time": "2026-01-01T00:00:00+00:00",
        "end_time": "2026-01-01T00:00:01.500000+00:00",
        "model": "m",
        "image_urls": [],
    }
