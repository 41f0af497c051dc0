"""Span and reward builders for the triplet adapter's tests (no tests here).

Times are seconds after a fixed instant; span ids are small integers written as the 16 hex digits OTel uses.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.rewards import RewardAssigned
from schemas.spans import SpanRecorded

BASE = datetime(2026, 1, 1, tzinfo=UTC)
ROLLOUT = "ro-1"
ATTEMPT = "at-1"
TRACE = "0" * 31 + "1"


def sid(number: int) -> str:
    return f"{number:016x}"


def at(seconds: float) -> datetime:
    return BASE + timedelta(seconds=seconds)


def span(
    number: int,
    name: str,
    start: float,
    end: float | None,
    *,
    parent: int | None = None,
    attributes: dict[str, Any] | None = None,
    seq: int | None = None,
) -> SpanRecorded:
    return SpanRecorded(
        rollout_id=ROLLOUT,
        attempt_id=ATTEMPT,
        sequence_id=number if seq is None else seq,
        trace_id=TRACE,
        span_id=sid(number),
        parent_id=sid(parent) if parent is not None else None,
        name=name,
        start_time=at(start),
        end_time=at(end) if end is not None else None,
        attributes=attributes or {},
    )


def llm(
    number: int,
    start: float,
    end: float | None,
    *,
    parent: int | None = None,
    prompt_ids: list[int] | None = None,
    response_ids: list[int] | None = None,
    response_id: str | None = None,
    name: str = "openai.chat.completion",
    extra: dict[str, Any] | None = None,
) -> SpanRecorded:
    """An LLM call span as our client writes it; token ids default to ``[number, 0]`` / ``[number, 1]``."""
    attributes: dict[str, Any] = {
        "gen_ai.system": "openai",
        "gen_ai.request.model": "m",
        "gen_ai.prompt.0.role": "user",
        "gen_ai.prompt.0.content": f"question {number}",
        "gen_ai.completion.0.role": "assistant",
        "gen_ai.completion.0.content": f"answer {number}",
        "prompt_token_ids": [number, 0] if prompt_ids is None else prompt_ids,
        "response_token_ids": [number, 1] if response_ids is None else response_ids,
    }
    if response_id is not None:
        attributes["gen_ai.response.id"] = response_id
    attributes.update(extra or {})
    return span(number, name, start, end, parent=parent, attributes=attributes)


def reward_span(
    number: int,
    value: Any,
    start: float,
    *,
    parent: int | None = None,
    links: list[tuple[str, str]] | None = None,
    dimensions: dict[str, Any] | None = None,
) -> SpanRecorded:
    """A v0.3 ``agentlightning.annotation`` reward, as ``agl.emit_reward`` writes it (zero duration)."""
    attributes: dict[str, Any] = {"agentlightning.reward.0.name": "primary", "agentlightning.reward.0.value": value}
    for i, (name, extra) in enumerate((dimensions or {}).items(), start=1):
        attributes[f"agentlightning.reward.{i}.name"] = name
        attributes[f"agentlightning.reward.{i}.value"] = extra
    for i, (key, target) in enumerate(links or []):
        attributes[f"agentlightning.link.{i}.key_match"] = key
        attributes[f"agentlightning.link.{i}.value_match"] = target
    return span(number, "agentlightning.annotation", start, start, parent=parent, attributes=attributes)


def reward_event(
    value: float,
    span_id: str | None = None,
    response_id: str | None = None,
    name: str = "reward",
    dimensions: dict[str, float] | None = None,
) -> RewardAssigned:
    return RewardAssigned(
        rollout_id=ROLLOUT,
        attempt_id=ATTEMPT,
        value=value,
        name=name,
        dimensions=dimensions or {},
        span_id=span_id,
        response_id=response_id,
    )
