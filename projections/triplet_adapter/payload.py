"""Reading an LLM call span: token ids, logprobs, raw messages, request and response metadata, image URLs.

Agent Lightning's key fallbacks (``span_to_triplet``): token ids from the first key holding a list of ints (an
invalid value falls through; none gives ``()``), the ``gen_ai.*`` families first and the Weave tracer's
``agentlightning.operation.*`` attributes only when they yield nothing; beyond it, the semantic conventions'
``gen_ai.input.messages`` / ``gen_ai.output.messages``, and token ids a call lacks taken from its duplicate spans
(Agent Lightning keeps the first span's empty lists).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from projections.triplet_adapter.attributes import (
    as_dict,
    first_family,
    first_int_list,
    first_string,
    gen_ai_tree,
    parse_json,
)
from projections.triplet_adapter.tree import Node
from schemas._base import Json

RESPONSE_ID_KEYS = ("gen_ai.response.id", "agentlightning.operation.output.id")
PROMPT_TOKEN_KEYS = (
    "prompt_token_ids",
    "agentlightning.prompt_token_ids",
    "agentlightning.operation.output.prompt_token_ids",  # Weave tracer
)
RESPONSE_TOKEN_KEYS = (
    "response_token_ids",
    "agentlightning.response_token_ids",
    "agentlightning.operation.output.response_token_ids.0",  # Weave tracer
    "agentlightning.operation.output.choices.0.token_ids",  # Weave with newer vLLM
    "agentlightning.operation.output.choices.0.provider_specific_fields.token_ids",  # new vLLM + OpenAI SDK
)


@dataclass(frozen=True, slots=True)
class Payload:
    """What a call span says about the call, read with Agent Lightning's key fallbacks."""

    response_id: str | None
    prompt_token_ids: tuple[int, ...]
    response_token_ids: tuple[int, ...]
    logprobs: list[dict[str, Json]] | None
    prompt: Json
    response: Json
    request: dict[str, Json]
    response_meta: dict[str, Json]
    model: str | None
    image_urls: tuple[str, ...]


def call_payload(call: Node, duplicates: Sequence[Node]) -> Payload:
    """The call's payload; token ids and logprobs it lacks come from the first duplicate span that has them (the
    agent's client span and the proxy's span of one call share a response id; often only the proxy has token ids).
    """
    read = payload(call)
    if duplicates and not (read.prompt_token_ids and read.response_token_ids and read.logprobs is not None):
        others = [payload(duplicate) for duplicate in duplicates]
        read = replace(
            read,
            prompt_token_ids=read.prompt_token_ids
            or next((o.prompt_token_ids for o in others if o.prompt_token_ids), ()),
            response_token_ids=read.response_token_ids
            or next((o.response_token_ids for o in others if o.response_token_ids), ()),
            logprobs=read.logprobs
            if read.logprobs is not None
            else next((o.logprobs for o in others if o.logprobs), None),
        )
    return read


def payload(node: Node) -> Payload:
    attributes = node.attributes
    gen_ai = gen_ai_tree(attributes)

    def read(group: str, fallback: str) -> Json:
        # The gen_ai family first; the Weave tracer's operation attributes only when it yields nothing. A family
        # must have dotted members (``gen_ai.prompt.0.role``), not be a bare value (``gen_ai.prompt`` itself).
        found = gen_ai.get(group)
        if found and isinstance(found, (dict, list)):
            return found
        return first_family(attributes, ("gen_ai." + group, fallback))

    request = dict(as_dict(read("request", "agentlightning.operation.input")))
    request.pop("messages", None)
    response_meta = dict(as_dict(read("response", "agentlightning.operation.output")))
    for key in ("choices", "prompt_token_ids", "response_token_ids"):
        response_meta.pop(key, None)
    prompt = read("prompt", "agentlightning.operation.input.messages")
    if not prompt:
        prompt = _structured(attributes.get("gen_ai.input.messages"))
    response = read("completion", "agentlightning.operation.output.choices")
    if not response:
        response = _structured(attributes.get("gen_ai.output.messages"))
    return Payload(
        response_id=first_string(attributes, RESPONSE_ID_KEYS),
        prompt_token_ids=first_int_list(attributes, PROMPT_TOKEN_KEYS),
        response_token_ids=first_int_list(attributes, RESPONSE_TOKEN_KEYS),
        logprobs=_logprobs(attributes.get("logprobs.content")),
        prompt=prompt,
        response=response,
        request=request,
        response_meta=response_meta,
        model=first_string(attributes, ("gen_ai.response.model", "gen_ai.request.model")),
        image_urls=image_urls(prompt),
    )


def _structured(value: Json) -> Json:
    """The semantic conventions' ``gen_ai.input/output.messages``: structured, or "MAY be" a JSON string."""
    return parse_json(value, None) if isinstance(value, str) else value


def _logprobs(value: Json) -> list[dict[str, Json]] | None:
    """``logprobs.content``: a JSON string (as Agent Lightning writes it) or a list of per-token dicts."""
    if isinstance(value, str):
        value = parse_json(value, None)
    if isinstance(value, list) and all(isinstance(item, dict) for item in value):
        return [item for item in value if isinstance(item, dict)]
    return None


def message_list(prompt: Json) -> list[Json]:
    """Prompt messages as a list: a list as is; a dict with numeric keys (``{"0": {...},
    "prompt_filter_results": ...}``) by those keys in order; another dict as one message; anything else none."""
    if isinstance(prompt, list):
        return prompt
    if isinstance(prompt, dict):
        numeric = sorted((key for key in prompt if key.isdecimal()), key=int)
        return [prompt[key] for key in numeric] if numeric else [prompt]
    return []


def image_urls(prompt: Json) -> tuple[str, ...]:
    """Image URLs of the prompt's content parts (``{"type": "image_url", "image_url": {"url": ...}}``), in order;
    a content given as a JSON string is parsed (Agent Lightning's ``extract_prompt_image_urls``)."""
    urls: list[str] = []
    for message in message_list(prompt):
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            # Only a JSON array can hold parts; most contents are plain text, and a failed parse costs.
            content = parse_json(content, None) if content.lstrip().startswith("[") else None
        if not isinstance(content, list):
            continue
        for part in content:
            if isinstance(part, dict) and part.get("type") == "image_url":
                image = part.get("image_url")
                if isinstance(image, dict) and isinstance(image.get("url"), str):
                    urls.append(str(image["url"]))
    return tuple(urls)
