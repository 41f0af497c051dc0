"""Agent Lightning's own adapter cases (``tests/adapter/test_triplet_trace_tree.py``, v0.3), replayed on our events
with the same expected counts, token ids, agent names and rewards."""

from __future__ import annotations

import json
from typing import Any

from projections.triplet_adapter import AdapterConfig, to_triplets
from projections.triplet_adapter.attributes import family
from projections.triplet_adapter.payload import image_urls
from schemas._base import Json
from tests.projections.test_triplet_adapter_support import llm, sid, span

ROOT, AGENT, AGENT_2 = 1, 2, 3


def agentops_reward(number: int, value: float, start: float, end: float, parent: int) -> Any:
    attributes = {"agentops.task.output": json.dumps({"type": "reward", "value": value})}
    return span(number, "agent.reward", start, end, parent=parent, attributes=attributes)


def session(agent_name: str = "planner") -> list[Any]:
    return [
        span(ROOT, "session", 0, 10),
        span(AGENT, "agent.node", 1, 9, parent=ROOT, attributes={"agent.name": agent_name}),
    ]


def qwen(response_id: str) -> dict[str, Any]:
    content = [
        {"type": "text", "text": "Question: How many food items are shown in the bar graph?"},
        {"type": "image_url", "image_url": {"url": "file:///root/test.png"}},
    ]
    return {
        "gen_ai.request.type": "chat",
        "gen_ai.system": "OpenAI",
        "gen_ai.request.model": "Qwen/Qwen2-VL-2B-Instruct",
        "gen_ai.request.temperature": 0.0,
        "gen_ai.request.streaming": False,
        "gen_ai.prompt.0.role": "user",
        "gen_ai.prompt.0.content": json.dumps(content),
        "gen_ai.response.id": response_id,
        "gen_ai.response.model": "Qwen/Qwen2-VL-2B-Instruct",
        "gen_ai.usage.prompt_tokens": 10,
        "gen_ai.completion.0.content": "The bar graph shows 10 food items.",
        "gen_ai.completion.0.finish_reason": "stop",
        "gen_ai.completion.0.role": "assistant",
        "prompt_token_ids": [151644, 8948, 198, 2610],
        "response_token_ids": [785, 3619, 4771],
    }


def gpt(response_id: str) -> dict[str, Any]:
    content = [
        {"type": "text", "text": "Question: How many food items are shown in the bar graph?"},
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,AAA..."}},
    ]
    return {
        "gen_ai.request.type": "chat",
        "gen_ai.request.model": "gpt-4.1-mini",
        "gen_ai.request.temperature": 0.0,
        "gen_ai.prompt.0.role": "user",
        "gen_ai.prompt.0.content": json.dumps(content),
        "gen_ai.prompt.prompt_filter_results": json.dumps([{"prompt_index": 0, "content_filter_result": {}}]),
        "gen_ai.response.id": response_id,
        "gen_ai.response.model": "gpt-4.1-mini-2025-04-14",
        "gen_ai.completion.0.finish_reason": "stop",
        "gen_ai.completion.0.role": "assistant",
        "gen_ai.completion.0.content": "The bar graph shows 13 food items.",
    }


def test_repair_is_required_for_the_agent_filter() -> None:
    spans = [
        *session("planner"),
        llm(4, 2, 3, parent=ROOT, prompt_ids=[7], response_ids=[8], response_id="resp-planner"),
        agentops_reward(5, 0.3, 4, 4.5, AGENT),
    ]
    triplets = to_triplets(spans, [], AdapterConfig(agent_match="planner"))
    assert [(t.agent_name, t.prompt_token_ids, t.response_token_ids, t.reward) for t in triplets] == [
        ("planner", (7,), (8,), 0.3)
    ]
    assert to_triplets(spans, [], AdapterConfig(agent_match="planner", repair_hierarchy=False)) == []


def test_dedupe_and_skip_empty_token_spans() -> None:
    spans = [
        *session("collector"),
        llm(4, 2, 3, parent=AGENT, prompt_ids=[10], response_ids=[20], response_id="resp-shared"),
        llm(5, 3.5, 4.2, parent=AGENT, prompt_ids=[99], response_ids=[98], response_id="resp-shared"),
        llm(6, 5, 5.5, parent=AGENT, prompt_ids=[], response_ids=[], response_id="resp-3"),
        agentops_reward(7, 0.25, 6, 6.5, AGENT),
    ]
    triplets = to_triplets(spans, [], AdapterConfig(skip_empty_token_spans=True))
    assert [(t.prompt_token_ids, t.response_token_ids, t.response_id, t.reward) for t in triplets] == [
        ((10,), (20,), "resp-shared", 0.25)
    ]
    with_agent = to_triplets(spans, [], AdapterConfig(agent_match="collector", skip_empty_token_spans=True))
    assert [(t.agent_name, t.reward) for t in with_agent] == [("collector", 0.25)]


def test_a_response_id_shared_across_agents_counts_once() -> None:
    spans = [
        span(ROOT, "session", 0, 10),
        span(AGENT, "agent.node", 0.5, 5, parent=ROOT, attributes={"agent.name": "vision-a"}),
        span(AGENT_2, "agent.node", 5.1, 9.5, parent=ROOT, attributes={"agent.name": "vision-b"}),
        span(4, "openai.chat.completion", 1, 2, parent=AGENT, attributes=qwen("chatcmpl-shared")),
        span(5, "openai.chat.completion", 6, 7, parent=AGENT_2, attributes=gpt("chatcmpl-shared")),
    ]
    assert [(t.span_id, t.agent_name) for t in to_triplets(spans, [])] == [(sid(4), "vision-a")]


def test_multimodal_payloads() -> None:
    spans = [
        span(ROOT, "session", 0, 15),
        span(AGENT, "agent.node", 0.5, 14.5, parent=ROOT, attributes={"agent.name": "vision-agent"}),
        span(4, "openai.chat.completion", 1, 2, parent=AGENT, attributes=qwen("chatcmpl-qwen")),
        span(5, "openai.chat.completion", 10, 11, parent=AGENT, attributes=gpt("chatcmpl-gpt")),
        agentops_reward(6, 0.7, 12, 12.5, AGENT),
    ]
    first, second = to_triplets(spans, [], AdapterConfig(agent_match="vision-agent"))
    assert (first.prompt_token_ids, first.response_token_ids) == ((151644, 8948, 198, 2610), (785, 3619, 4771))
    assert (first.response_id, first.agent_name, first.reward) == ("chatcmpl-qwen", "vision-agent", None)
    assert first.image_urls == ("file:///root/test.png",)
    assert first.prompt == family(spans[2].attributes, "gen_ai.prompt")
    assert first.request == {
        "type": "chat",
        "model": "Qwen/Qwen2-VL-2B-Instruct",
        "temperature": 0.0,
        "streaming": False,
    }
    assert first.response_meta == {"id": "chatcmpl-qwen", "model": "Qwen/Qwen2-VL-2B-Instruct"}
    assert first.response == [
        {"content": "The bar graph shows 10 food items.", "finish_reason": "stop", "role": "assistant"}
    ]
    assert (second.prompt_token_ids, second.response_token_ids) == ((), ())
    assert (second.response_id, second.agent_name, second.reward) == ("chatcmpl-gpt", "vision-agent", 0.7)
    # The filter results beside message 0 keep the prompt a dict keyed "0", as Agent Lightning's unflattening does.
    assert isinstance(second.prompt, dict)
    assert sorted(second.prompt) == ["0", "prompt_filter_results"]
    assert second.image_urls == ("data:image/jpeg;base64,AAA...",)


def test_first_sibling_with_two_agents() -> None:
    spans = [
        span(ROOT, "session", 0, 10),
        span(AGENT, "agent.node", 1, 9, parent=ROOT, attributes={"agent.name": "sibling-agent"}),
        span(AGENT_2, "agent.node", 1, 9, parent=ROOT, attributes={"agent.name": "sibling-agent"}),
        llm(4, 2, 3, parent=AGENT, prompt_ids=[1], response_ids=[2], response_id="resp-1"),
        agentops_reward(5, 0.8, 3.5, 3.6, AGENT),
        llm(6, 3.1, 3.2, parent=AGENT_2, prompt_ids=[3], response_ids=[4], response_id="resp-2"),
    ]
    config = AdapterConfig(agent_match="sibling-agent", reward_match="first_sibling", skip_empty_token_spans=True)
    assert [(t.response_id, t.reward) for t in to_triplets(spans, [], config)] == [("resp-1", 0.8), ("resp-2", None)]
    # First occurrence gives the reward to the call that ended last before it: the other agent's.
    occurrence = AdapterConfig(agent_match="sibling-agent", skip_empty_token_spans=True)
    assert [(t.response_id, t.reward) for t in to_triplets(spans, [], occurrence)] == [
        ("resp-1", None),
        ("resp-2", 0.8),
    ]


def test_chat_model_llm_spans_match_by_default() -> None:
    attributes = {
        "gen_ai.request.model": "gpt-4.1-mini",
        "gen_ai.prompt.0.role": "user",
        "gen_ai.prompt.0.content": "Extract the key facts.",
        "gen_ai.completion.0.role": "assistant",
        "gen_ai.completion.0.content": '{"facts": ["sky is blue"]}',
        "gen_ai.response.id": "resp-structured",
        "prompt_token_ids": [1, 2, 3],
        "response_token_ids": [4, 5, 6],
    }
    spans = [
        *session("langchain-agent"),
        span(4, "chat_model.llm", 2, 3, parent=AGENT, attributes=attributes),
        agentops_reward(5, 0.9, 4, 4.1, AGENT),
    ]
    triplets = to_triplets(spans, [], AdapterConfig(agent_match="langchain-agent"))
    assert [(t.prompt_token_ids, t.response_token_ids, t.response_id, t.agent_name, t.reward) for t in triplets] == [
        ((1, 2, 3), (4, 5, 6), "resp-structured", "langchain-agent", 0.9)
    ]


def test_image_urls_from_lists_numeric_dicts_and_invalid_payloads() -> None:
    def parts(url: str, text: str) -> Json:
        return [{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": url}}]

    as_list: Json = [
        {"role": "user", "content": json.dumps(parts("https://example.com/a.png", "describe"))},
        {"role": "assistant", "content": json.dumps(parts("https://example.com/b.png", "another"))},
    ]
    assert image_urls(as_list) == ("https://example.com/a.png", "https://example.com/b.png")
    by_number: Json = {
        "1": {"role": "assistant", "content": parts("https://example.com/second.png", "second")},
        "0": {"role": "user", "content": parts("https://example.com/first.png", "first")},
    }
    assert image_urls(by_number) == ("https://example.com/first.png", "https://example.com/second.png")
    invalid: Json = [
        {"role": "user", "content": "not-a-json"},
        {"role": "assistant", "content": json.dumps([{"type": "text", "text": "no images here"}])},
        {"role": "system"},
    ]
    assert image_urls(invalid) == ()
    assert image_urls("unexpected-string") == ()
