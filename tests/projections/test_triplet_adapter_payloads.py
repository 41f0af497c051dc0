"""The triplet adapter's payloads (prompts, replies, images) and trace-to-messages, attribute unflattening, and its
configurations."""

from __future__ import annotations

import json

import pytest

from projections.triplet_adapter import DEFAULT_LLM_CALL_MATCH, AdapterConfig, to_messages, to_triplets
from projections.triplet_adapter.attributes import unflatten
from tests.projections.test_triplet_adapter_support import llm, sid, span

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
