"""The span of one LLM chat call, made by ``agl.llm``'s clients when the attempt is traced.

Named ``openai.chat.completion`` (what the triplet adapter matches by default, as Agent Lightning's does), kind
CLIENT, with the GenAI semantic conventions' attributes: ``gen_ai.system``, ``gen_ai.operation.name``,
``gen_ai.request.model`` and the sampling parameters as ``gen_ai.request.*``, the messages flattened as
``gen_ai.prompt.{i}.role|content`` and ``gen_ai.completion.0.role|content|finish_reason``,
``gen_ai.response.id|model|finish_reasons``, ``gen_ai.usage.input_tokens|output_tokens``; plus what training
needs: ``prompt_token_ids``, ``response_token_ids`` and ``logprobs.content`` (a JSON list of
``{token, logprob, bytes, top_logprobs}``, as Agent Lightning writes it). A failed call is an ERROR span.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from typing import TYPE_CHECKING, Any

from opentelemetry import trace as trace_api
from opentelemetry.trace import SpanKind, format_span_id

from agl import tracer

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from agl.llm import ChatResult

LLM_SPAN_NAME = "openai.chat.completion"
#: Request fields recorded as ``gen_ai.request.<field>`` when they are plain values.
REQUEST_FIELDS = ("temperature", "max_tokens", "max_completion_tokens", "top_p", "top_k", "seed", "stop", "n",
                  "frequency_penalty", "presence_penalty")  # fmt: skip


class LLMCall:
    """The span of one call being made; :meth:`finish` records the reply and answers it with the span's id."""

    def __init__(self, span: trace_api.Span | None) -> None:
        self.span = span

    def finish(self, result: ChatResult, *, proxied: bool = False) -> ChatResult:
        """``proxied``: our LLM proxy recorded the call whole, so this span leaves the logprobs to its span."""
        if self.span is None:
            return result
        self.span.set_attributes(response_attributes(result, logprobs=not proxied))
        return dataclasses.replace(result, span_id=format_span_id(self.span.get_span_context().span_id))


@contextlib.contextmanager
def llm_call(body: Mapping[str, Any]) -> Iterator[LLMCall]:
    """A span around the call ``body`` describes (the current span while it lasts); none when not traced."""
    if not tracer.active():
        yield LLMCall(None)
        return
    with tracer.get_tracer("agl.llm").start_as_current_span(
        LLM_SPAN_NAME, kind=SpanKind.CLIENT, attributes=request_attributes(body)
    ) as span:
        yield LLMCall(span)


def _text(content: Any) -> str:
    """Message content as text: multimodal parts (a list of dicts) as their JSON."""
    return content if isinstance(content, str) else json.dumps(content)


def request_attributes(body: Mapping[str, Any]) -> dict[str, Any]:
    attributes: dict[str, Any] = {"gen_ai.system": "openai", "gen_ai.operation.name": "chat"}
    if isinstance(body.get("model"), str):
        attributes["gen_ai.request.model"] = body["model"]
    for field in REQUEST_FIELDS:
        value = body.get(field)
        if isinstance(value, (str, int, float, bool)) or (
            isinstance(value, list) and value and all(isinstance(v, str) for v in value)
        ):
            attributes[f"gen_ai.request.{field}"] = value
    for i, message in enumerate(body.get("messages") or ()):
        if not isinstance(message, dict):
            continue
        attributes[f"gen_ai.prompt.{i}.role"] = str(message.get("role"))
        if message.get("content") is not None:
            attributes[f"gen_ai.prompt.{i}.content"] = _text(message["content"])
        if message.get("tool_calls"):
            attributes[f"gen_ai.prompt.{i}.tool_calls"] = json.dumps(message["tool_calls"])
        if message.get("tool_call_id"):
            attributes[f"gen_ai.prompt.{i}.tool_call_id"] = str(message["tool_call_id"])
    if body.get("tools"):
        attributes["gen_ai.request.tools"] = json.dumps(body["tools"])
    return attributes


def response_attributes(result: ChatResult, *, logprobs: bool = True) -> dict[str, Any]:
    attributes: dict[str, Any] = {"gen_ai.completion.0.role": "assistant"}
    if result.content is not None:
        attributes["gen_ai.completion.0.content"] = result.content
    if result.finish_reason is not None:
        attributes["gen_ai.completion.0.finish_reason"] = result.finish_reason
        attributes["gen_ai.response.finish_reasons"] = [result.finish_reason]
    if result.response_id is not None:
        attributes["gen_ai.response.id"] = result.response_id
    if result.model is not None:
        attributes["gen_ai.response.model"] = result.model
    if result.usage is not None:
        attributes["gen_ai.usage.input_tokens"] = result.usage.prompt_tokens
        attributes["gen_ai.usage.output_tokens"] = result.usage.completion_tokens
    if result.prompt_token_ids is not None:
        attributes["prompt_token_ids"] = list(result.prompt_token_ids)
    if result.completion_token_ids is not None:
        attributes["response_token_ids"] = list(result.completion_token_ids)
    choices = result.raw.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") or {}
    if isinstance(message, dict) and message.get("tool_calls"):
        attributes["gen_ai.completion.0.tool_calls"] = json.dumps(message["tool_calls"])
    entries = (choice.get("logprobs") or {}).get("content") if logprobs else None
    if isinstance(entries, list) and entries:
        keep = ("token", "logprob", "bytes", "top_logprobs")
        attributes["logprobs.content"] = json.dumps(
            [{k: e.get(k) for k in keep} for e in entries if isinstance(e, dict)]
        )
    return attributes
