"""The assignment router's decisions: which agent type a rollout of a task kind was given. Keyed by rollout_id.

A decision is made once, at enqueue, and recorded with everything it was made from (the candidates, the value
drawn for each, the policy and its prior), so a replay reads the choice instead of sampling again.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

from pydantic import Field, field_validator

from schemas._base import Event
from schemas.bounds import MAX_ID_LENGTH

RouterPolicy = Literal["thompson", "off"]


class RouterAssigned(Event):
    key_field: ClassVar[str] = "rollout_id"
    type: Literal["router.assigned"] = "router.assigned"
    version: Literal[1] = 1
    rollout_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    task_kind: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    agent_type: str = Field(min_length=1, max_length=MAX_ID_LENGTH, description="the chosen type")
    candidates: tuple[str, ...] = Field(min_length=1, description="the agent types the choice was made among")
    samples: dict[str, float] = Field(
        default_factory=dict,
        description="per candidate: the drawn posterior value (thompson) or its free slots (off)",
    )
    policy: RouterPolicy
    prior_alpha: float = Field(gt=0, description="Beta prior of every (task kind, agent type), successes")
    prior_beta: float = Field(gt=0, description="Beta prior, failures")
    required_capabilities: tuple[str, ...] = Field(description="what the rollout was enqueued requiring")

    @field_validator("samples")
    @classmethod
    def _finite(cls, samples: dict[str, float]) -> dict[str, float]:
        if not all(math.isfinite(v) for v in samples.values()):
            raise ValueError("sampled values must be finite numbers")
        return samples
