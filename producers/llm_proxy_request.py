"""What the LLM proxy makes of a request before it goes upstream: the JSON body, the rollout it names, the body
as sent to the backend, and the caller's trace context."""

from __future__ import annotations

import os
import re
from typing import Any

import orjson

from producers.llm_proxy_backend import Backend, BackendKind, ProxyRefused
from producers.llm_proxy_span import Operation

_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")


def json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise ProxyRefused(400, "invalid_request_error", f"the body is not JSON: {e}") from e
    if not isinstance(body, dict):
        raise ProxyRefused(400, "invalid_request_error", "the body must be a JSON object")
    return body


def named_rollout(rollout_id: str | None) -> str:
    if rollout_id is None:
        raise ProxyRefused(
            400,
            "invalid_request_error",
            "name the rollout: an x-rollout-id header (and x-attempt-id), or the base URL "
            "/rollout/{rollout_id}/attempt/{attempt_id}/v1",
        )
    return rollout_id


def upstream_body(body: dict[str, Any], backend: Backend, kind: BackendKind, operation: Operation) -> dict[str, Any]:
    """The body as sent upstream: the resource's sampling parameters as defaults, its model, token-id options."""
    upstream: dict[str, Any] = {**backend.sampling, **body, "model": backend.model}
    if kind == "vllm":
        upstream.setdefault("return_token_ids", True)
    elif kind == "llama.cpp" and operation == "chat":
        upstream.setdefault("logprobs", True)
        if upstream["logprobs"] is True:
            # llama.cpp answers 20 alternatives per token unless told otherwise (OpenAI: none), twenty times the
            # span the token ids need; 1 is its least that still carries them (0 turns logprobs off).
            upstream.setdefault("top_logprobs", 1)
    return upstream


def trace_context(traceparent: str | None) -> tuple[str, str | None]:
    """The caller's trace and span (W3C ``traceparent``), else a new trace with the call as its root."""
    found = _TRACEPARENT.match(traceparent.strip().lower()) if traceparent else None
    if found and set(found.group(1)) != {"0"} and set(found.group(2)) != {"0"}:
        return found.group(1), found.group(2)
    return os.urandom(16).hex(), None
