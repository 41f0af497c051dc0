"""Trace to messages: one OpenAI chat payload per LLM call, for prompt optimisation (Agent Lightning's
``TraceToMessages``).

Each call found under the configuration's matching rules (token ids are not needed here, so
``skip_empty_token_spans`` does not apply) gives ``{"messages": [...prompt, assistant reply], "tools": [...] |
None, "span_id": ...}``. Prompt messages without a role get one when it is unambiguous (``tool_calls`` means
assistant, ``tool_call_id`` means tool) and are dropped otherwise; the assistant reply carries the tool calls
recorded by child spans (``tool.name``, ``tool.parameters``, ``tool.call.id``) or in the completion itself; tools
come from ``gen_ai.request.functions``. Malformed pieces are skipped, never raised (Agent Lightning raises).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from projections.triplet_adapter.adapter import analyse
from projections.triplet_adapter.attributes import family, parse_json
from projections.triplet_adapter.config import AdapterConfig
from projections.triplet_adapter.payload import message_list, payload
from projections.triplet_adapter.tree import ordered
from schemas._base import Json
from schemas.spans import SpanRecorded

_DEFAULT = AdapterConfig()


def to_messages(spans: Sequence[SpanRecorded], config: AdapterConfig = _DEFAULT) -> list[dict[str, Json]]:
    """Per LLM call, in call order: ``{"messages": [...], "tools": [...] | None, "span_id": ...}``."""
    if not spans:
        return []
    _, _, search = analyse(spans, config)
    children: dict[str, list[SpanRecorded]] = {}
    for span in ordered(spans):
        if span.parent_id is not None:
            children.setdefault(span.parent_id, []).append(span)
    conversations: list[dict[str, Json]] = []
    for call, _ in search.calls:
        read = payload(call)
        tool_calls: list[Json] = [
            found for child in children.get(call.id, []) if (found := _tool_call(child.attributes))
        ]
        messages: list[Json] = [*_prompt_messages(read.prompt), *_replies(read.response, tool_calls)]
        conversations.append({"messages": messages, "tools": _tools(read.request), "span_id": call.id})
    return conversations


def _as_list(value: Json) -> list[Json]:
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        return [value]
    return []


def _text(content: Json) -> Json:
    """Semantic-convention parts (``[{"type": "text", "content": ...}]``) as plain text; other content as is."""
    if isinstance(content, list) and content and all(isinstance(part, dict) and "content" in part for part in content):
        return "".join(str(part["content"]) for part in content if isinstance(part, dict))
    return content


def _prompt_messages(prompt: Json) -> list[Json]:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    messages: list[Json] = []
    for message in message_list(prompt):
        if not isinstance(message, dict):
            continue
        role = message.get("role")
        if not isinstance(role, str):
            role = "assistant" if "tool_calls" in message else "tool" if "tool_call_id" in message else None
        if role is None:
            continue
        content = _text(message.get("content", message.get("parts", "")))
        if role == "assistant" and "tool_calls" in message:
            calls = [_openai_tool_call(call) for call in _as_list(message["tool_calls"])]
            messages.append({"role": "assistant", "content": None, "tool_calls": [c for c in calls if c]})
            continue
        entry: dict[str, Json] = {"role": role, "content": content}
        if isinstance(message.get("tool_call_id"), str):
            entry["tool_call_id"] = message["tool_call_id"]
        messages.append(entry)
    return messages


def _replies(response: Json, tool_calls: list[Json]) -> list[Json]:
    replies: list[Json] = []
    for completion in _as_list(response):
        if not isinstance(completion, dict) or completion.get("role", "assistant") != "assistant":
            continue
        reply: dict[str, Json] = {
            "role": "assistant",
            "content": _text(completion.get("content", completion.get("parts"))),
        }
        own: list[Json] = [c for c in (_openai_tool_call(call) for call in _as_list(completion.get("tool_calls"))) if c]
        if tool_calls or own:
            reply["tool_calls"] = tool_calls or own
        replies.append(reply)
    return replies


def _openai_tool_call(call: Json) -> dict[str, Json] | None:
    """A tool call in OpenAI's shape, from either OpenAI's shape or the flat ``{id, name, arguments}``."""
    if not isinstance(call, dict):
        return None
    function = call.get("function")
    if isinstance(function, dict) and isinstance(function.get("name"), str):
        return {"id": call.get("id"), "type": "function", "function": function}
    if isinstance(call.get("name"), str):
        return {
            "id": call.get("id"),
            "type": "function",
            "function": {"name": call["name"], "arguments": call.get("arguments")},
        }
    return None


def _tool_call(attributes: Mapping[str, Json]) -> dict[str, Json] | None:
    tool = family(attributes, "tool")
    if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
        return None
    call = tool.get("call")
    call = call if isinstance(call, dict) else {}
    arguments = tool.get("parameters")
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments, sort_keys=True)
    return {
        "id": call.get("id"),
        "type": call.get("type", "function"),
        "function": {"name": tool["name"], "arguments": arguments},
    }


def _tools(request: Mapping[str, Json]) -> list[Json] | None:
    functions = request.get("functions")
    if not isinstance(functions, (list, dict)):
        return None
    tools: list[Json] = []
    for function in _as_list(functions):
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            continue
        parameters = function.get("parameters")
        if isinstance(parameters, str):
            parameters = parse_json(parameters, parameters)
        tools.append(
            {
                "type": "function",
                "function": {
                    "name": function["name"],
                    "description": function.get("description", ""),
                    "parameters": parameters,
                },
            }
        )
    return tools or None
