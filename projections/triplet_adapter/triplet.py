"""The adapter's output: one (prompt, response, reward) triplet per LLM call of an attempt."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from schemas._base import Json

RewardSource = Literal["link", "positional", "final"]


@dataclass(frozen=True)
class Triplet:
    """One LLM call with its token ids, raw payloads and reward.

    ``reward_dimensions`` holds every named dimension of the reward, the primary one included (a scalar
    ``agl.emit_reward(1.0)`` gives ``{"primary": 1.0}``). ``reward_source`` says how the reward was bound:
    ``link`` (it names this call), ``positional`` (the configured policy), ``final`` (the attempt's last unlinked
    reward event), or None. ``reward_error`` records a malformed reward value that was meant for this call.
    """

    index: int
    span_id: str
    response_id: str | None
    agent_name: str | None
    prompt_token_ids: tuple[int, ...]
    response_token_ids: tuple[int, ...]
    logprobs: list[dict[str, Json]] | None
    prompt: Json
    response: Json
    reward: float | None
    reward_dimensions: dict[str, float]
    reward_source: RewardSource | None
    reward_error: str | None
    request: dict[str, Json]
    response_meta: dict[str, Json]
    start_time: datetime
    end_time: datetime
    model: str | None
    image_urls: tuple[str, ...] = field(default=())

    def as_dict(self) -> dict[str, Json]:
        """JSON-able (datetimes as ISO 8601, tuples as lists), for rows and exports."""
        return {
            "index": self.index,
            "span_id": self.span_id,
            "response_id": self.response_id,
            "agent_name": self.agent_name,
            "prompt_token_ids": list(self.prompt_token_ids),
            "response_token_ids": list(self.response_token_ids),
            "logprobs": list(self.logprobs) if self.logprobs is not None else None,
            "prompt": self.prompt,
            "response": self.response,
            "reward": self.reward,
            "reward_dimensions": dict(self.reward_dimensions),
            "reward_source": self.reward_source,
            "reward_error": self.reward_error,
            "request": self.request,
            "response_meta": self.response_meta,
            "start_time": self.start_time.isoformat(),
            "end_time": self.end_time.isoformat(),
            "model": self.model,
            "image_urls": list(self.image_urls),
        }
