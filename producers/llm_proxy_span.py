"""What one proxied LLM call becomes as a span: the backend's answer (a whole reply, or assembled from the
chunks of a stream) and the GenAI attributes written from it. Pure: no I/O, no clock.

Attribute names are the ones the triplet adapter reads (see the shared design note): the GenAI semantic
conventions (``gen_ai.operation.name``, ``gen_ai.request.*``, ``gen_ai.response.*``, ``gen_ai.usage.*``), messages
flattened the way OpenLLMetry and LiteLLM write them (``gen_ai.prompt.{i}.role|content|tool_calls.{j}.*``,
``gen_ai.completion.{i}.role|content|finish_reason|tool_calls.{j}.*``, tools as ``llm.request.functions.{k}.*``),
and Agent Lightning's own ``prompt_token_ids``, ``response_token_ids`` and ``logprobs.content`` (a JSON string),
which no convention names.

Token ids come from where the backends put them: vLLM's ``return_token_ids`` (top-level ``prompt_token_ids``;
``choices[i].token_ids``, per chunk a delta when streaming; an older patched vLLM's ``response_token_ids``), and
llama.cpp's ``logprobs.content[i].id`` (its prompt ids are asked of its /tokenize by the caller).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import orjson

from schemas._base import Json

if TYPE_CHECKING:
    from schemas import SpanRecorded

#: The header of the proxy's answer naming the span it recorded (the call, with its token ids and logprobs).
SPAN_ID_HEADER = "x-agl-span-id"

Operation = Literal["chat", "text_completion"]

#: Request fields recorded as ``gen_ai.request.<name>`` (the conventions' names where they differ).
REQUEST_FIELDS = {
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "max_tokens": "max_tokens",
    "max_completion_tokens": "max_tokens",
    "frequency_penalty": "frequency_penalty",
    "presence_penalty": "presence_penalty",
    "seed": "seed",
    "n": "choice.count",
}


@dataclass
class Choice:
    """One choice of the answer, whole or assembled from its deltas."""

    role: str | None = None
    content: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    #: tool calls by their index in the message: id, name, arguments (concatenated from deltas)
    tool_calls: dict[int, dict[str, str]] = field(default_factory=dict)
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[dict[str, Any]] = field(default_factory=list)

    def add_tool_call(self, index: int, call: dict[str, Any]) -> None:
        slot = self.tool_calls.setdefault(index, {"id": "", "name": "", "arguments": ""})
        function = call.get("function") or {}
        if call.get("id"):
            slot["id"] = str(call["id"])
        if function.get("name"):
            slot["name"] += str(function["name"])
        if function.get("arguments"):
            slot["arguments"] += str(function["arguments"])

    def response_token_ids(self) -> list[int]:
        """vLLM's ``token_ids``, else llama.cpp's ids beside each logprob (only when every entry has one)."""
        if self.token_ids:
            return self.token_ids
        if self.logprobs and all(isinstance(e.get("id"), int) for e in self.logprobs):
            return [int(e["id"]) for e in self.logprobs]
        return []


@dataclass
class Exchange:
    """What the backend answered, as far as it got."""

    response_id: str | None = None
    model: str | None = None
    choices: dict[int, Choice] = field(default_factory=dict)
    prompt_token_ids: list[int] = field(default_factory=list)
    usage: dict[str, Any] = field(default_factory=dict)
    chunks: int = 0

    def choice(self, index: int) -> Choice:
        return self.choices.setdefault(index, Choice())

    def add(self, payload: dict[str, Any], *, delta: bool) -> None:
        """Fold a whole reply (``delta=False``) or one stream chunk (``delta=True``) into the exchange."""
        self.response_id = self.response_id or _str(payload.get("id"))
        self.model = self.model or _str(payload.get("model"))
        if _int_list(payload.get("prompt_token_ids")):  # vLLM: whole reply, or the first chunk only
            self.prompt_token_ids = _int_list(payload["prompt_token_ids"])
        legacy = payload.get("response_token_ids")  # vLLM patched by Agent Lightning: List[List[int]]
        if isinstance(legacy, list) and legacy and _int_list(legacy[0]):
            self.choice(0).token_ids = _int_list(legacy[0])
        if isinstance(payload.get("usage"), dict):
            self.usage = payload["usage"]
        for raw in payload.get("choices") or ():
            if isinstance(raw, dict):
                self._add_choice(raw, delta=delta)

    def _add_choice(self, raw: dict[str, Any], *, delta: bool) -> None:
        index = raw.get("index")
        choice = self.choice(index if isinstance(index, int) else 0)
        message = raw.get("delta" if delta else "message")
        if isinstance(message, dict):
            choice.role = choice.role or _str(message.get("role"))
            if isinstance(message.get("content"), str):
                choice.content.append(message["content"])
            for i, call in enumerate(message.get("tool_calls") or ()):
                if isinstance(call, dict):
                    choice.add_tool_call(call["index"] if isinstance(call.get("index"), int) else i, call)
        if isinstance(raw.get("text"), str):  # the completions API
            choice.content.append(raw["text"])
        if raw.get("finish_reason"):
            choice.finish_reason = str(raw["finish_reason"])
        choice.token_ids.extend(_int_list(raw.get("token_ids")))
        logprobs = raw.get("logprobs")
        if isinstance(logprobs, dict) and isinstance(logprobs.get("content"), list):
            choice.logprobs.extend(e for e in logprobs["content"] if isinstance(e, dict))


class ChunkAssembler:
    """Reads a server-sent event stream as its bytes pass through, and folds each chunk into an exchange.

    Bytes arrive cut anywhere, so a partial line waits for the rest. Lines that are not ``data:`` JSON objects
    (comments, ``[DONE]``, a backend's oddities) are skipped: the stream itself is relayed untouched either way.
    """

    def __init__(self) -> None:
        self.exchange = Exchange()
        self._pending = b""

    def feed(self, data: bytes) -> None:
        lines = (self._pending + data).split(b"\n")
        self._pending = lines.pop()
        for line in lines:
            self._line(line.strip())

    def close(self) -> Exchange:
        """The exchange, with a last line that had no newline read too."""
        if self._pending.strip():
            self._line(self._pending.strip())
        self._pending = b""
        return self.exchange

    def _line(self, line: bytes) -> None:
        if not line.startswith(b"data:"):
            return
        data = line[5:].strip()
        if not data or data == b"[DONE]":
            return
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        if isinstance(payload, dict):
            self.exchange.chunks += 1
            self.exchange.add(payload, delta=True)


def span_attributes(
    operation: Operation,
    body: dict[str, Any],
    exchange: Exchange | None,
    *,
    provider: str,
    prompt_token_ids: list[int] | None = None,
) -> dict[str, Json]:
    """The span's attributes: the request as sent upstream, and the answer as far as it got."""
    attributes: dict[str, Json] = {
        "gen_ai.operation.name": operation,
        "gen_ai.system": provider,
        "gen_ai.provider.name": provider,
    }
    if isinstance(body.get("model"), str):
        attributes["gen_ai.request.model"] = body["model"]
    for name, attribute in REQUEST_FIELDS.items():
        value = body.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            attributes[f"gen_ai.request.{attribute}"] = value
    stop = body.get("stop")
    if stop:
        attributes["gen_ai.request.stop_sequences"] = [stop] if isinstance(stop, str) else [str(s) for s in stop]
    if body.get("stream"):
        attributes["gen_ai.request.stream"] = True
    attributes.update(_prompt_attributes(operation, body))
    if exchange is not None:
        attributes.update(_answer_attributes(exchange))
        prompt_token_ids = exchange.prompt_token_ids or prompt_token_ids
    if prompt_token_ids:
        attributes["prompt_token_ids"] = _json_list(prompt_token_ids)
    return attributes


def _prompt_attributes(operation: Operation, body: dict[str, Any]) -> dict[str, Json]:
    attributes: dict[str, Json] = {}
    if operation == "text_completion":
        prompt = body.get("prompt")
        attributes["gen_ai.prompt.0.role"] = "user"
        attributes["gen_ai.prompt.0.content"] = prompt if isinstance(prompt, str) else _json_text(prompt)
        return attributes
    for i, message in enumerate(body.get("messages") or ()):
        if not isinstance(message, dict):
            continue
        prefix = f"gen_ai.prompt.{i}"
        attributes[f"{prefix}.role"] = str(message.get("role"))
        content = message.get("content")
        if content is not None:  # a list of parts (text, image_url...) is kept whole, as JSON text
            attributes[f"{prefix}.content"] = content if isinstance(content, str) else _json_text(content)
        if message.get("tool_call_id"):
            attributes[f"{prefix}.tool_call_id"] = str(message["tool_call_id"])
        for j, call in enumerate(message.get("tool_calls") or ()):
            if isinstance(call, dict):
                function = call.get("function") or {}
                attributes[f"{prefix}.tool_calls.{j}.id"] = str(call.get("id", ""))
                attributes[f"{prefix}.tool_calls.{j}.name"] = str(function.get("name", ""))
                attributes[f"{prefix}.tool_calls.{j}.arguments"] = str(function.get("arguments", ""))
    for k, tool in enumerate(body.get("tools") or ()):
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict):
            attributes[f"llm.request.functions.{k}.name"] = str(function.get("name", ""))
            if function.get("description") is not None:
                attributes[f"llm.request.functions.{k}.description"] = str(function["description"])
            if function.get("parameters") is not None:
                attributes[f"llm.request.functions.{k}.parameters"] = _json_text(function["parameters"])
    return attributes


def _answer_attributes(exchange: Exchange) -> dict[str, Json]:
    attributes: dict[str, Json] = {}
    if exchange.response_id:
        attributes["gen_ai.response.id"] = exchange.response_id
    if exchange.model:
        attributes["gen_ai.response.model"] = exchange.model
    ordered = [exchange.choices[i] for i in sorted(exchange.choices)]
    attributes["gen_ai.response.finish_reasons"] = [c.finish_reason for c in ordered if c.finish_reason]
    for i, choice in enumerate(ordered):
        prefix = f"gen_ai.completion.{i}"
        attributes[f"{prefix}.role"] = choice.role or "assistant"
        if choice.content or not choice.tool_calls:
            attributes[f"{prefix}.content"] = "".join(choice.content)
        if choice.finish_reason:
            attributes[f"{prefix}.finish_reason"] = choice.finish_reason
        for j, index in enumerate(sorted(choice.tool_calls)):
            for key, value in choice.tool_calls[index].items():
                attributes[f"{prefix}.tool_calls.{j}.{key}"] = value
    usage = exchange.usage
    for ours, theirs in (("input_tokens", "prompt_tokens"), ("output_tokens", "completion_tokens")):
        if isinstance(usage.get(theirs), int):
            attributes[f"gen_ai.usage.{ours}"] = usage[theirs]
    if ordered:  # training takes the first choice, as Agent Lightning does
        first = ordered[0]
        if first.response_token_ids():
            attributes["response_token_ids"] = _json_list(first.response_token_ids())
        if first.logprobs:
            attributes["logprobs.content"] = _json_text(first.logprobs)
    return attributes


def _json_list(ids: list[int]) -> list[Json]:
    return list[Json](ids)


def _json_text(value: Any) -> str:
    return orjson.dumps(value).decode()


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _int_list(value: Any) -> list[int]:
    if isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return list(value)
    return []


def slimmed(event: SpanRecorded) -> list[SpanRecorded]:
    """Lighter copies of a span: without logprobs, then without the messages' text either."""
    no_logprobs = {k: v for k, v in event.attributes.items() if k != "logprobs.content"}
    no_text = {k: v for k, v in no_logprobs.items() if not k.endswith((".content", ".arguments", ".parameters"))}
    return [
        event.model_copy(update={"attributes": {**attributes, "agentlightning.truncated": dropped}})
        for attributes, dropped in ((no_logprobs, "logprobs"), (no_text, "logprobs,content"))
    ]
