"""Rewards: a value for a rollout, optionally for one span or one LLM response of it. Keyed by rollout_id."""

from __future__ import annotations

import math
from typing import ClassVar, Literal

from pydantic import Field, field_validator

from schemas._base import Event
from schemas.bounds import MAX_ID_LENGTH


class RewardAssigned(Event):
    key_field: ClassVar[str] = "rollout_id"
    type: Literal["reward.assigned"] = "reward.assigned"
    version: Literal[1] = 1
    rollout_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    attempt_id: str | None = Field(default=None, max_length=MAX_ID_LENGTH)
    value: float
    name: str = Field(default="reward", description="the primary reward's name")
    dimensions: dict[str, float] = Field(default_factory=dict, description="further named reward dimensions")
    span_id: str | None = Field(default=None, pattern=r"^[0-9a-f]{16}$", description="the span this rewards")
    response_id: str | None = Field(default=None, description="the LLM response (gen_ai.response.id) rewarded")

    @field_validator("value")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("a reward must be a finite number")
        return value
