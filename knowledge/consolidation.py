"""Memory consolidation: near-duplicate memories merged, each kept with its provenance, scored by reward and age.

A pure function over the recorded memories (their vectors come from the events, so the result is the same on
every replica and after every rebuild) and a policy; the time of reading is an argument, never a clock read here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class ConsolidationPolicy:
    #: Cosine similarity at or above which two memories are one.
    merge_threshold: float = 0.9
    #: Age at which a memory's weight halves.
    half_life_days: float = 30.0
    #: How much the mean reward of the supporting rollouts adds (score x (1 + weight x reward)).
    reward_weight: float = 1.0
    #: Memories scoring below this are left out.
    min_score: float = 0.0


@dataclass(frozen=True)
class MemoryItem:
    memory_id: str
    text: str
    kind: str
    rollout_id: str | None
    occurred_at: datetime
    vector: npt.NDArray[np.float32]


@dataclass
class Consolidated:
    """One memory after merging: the earliest text, and everything that supports it."""

    memory_id: str
    text: str
    kind: str
    memory_ids: list[str]
    rollout_ids: list[str]
    rewards: list[float]
    first_at: datetime
    last_at: datetime
    score: float = 0.0
    vector: npt.NDArray[np.float32] = field(repr=False, default_factory=lambda: np.zeros(0, dtype=np.float32))

    @property
    def mean_reward(self) -> float | None:
        return sum(self.rewards) / len(self.rewards) if self.rewards else None


def consolidate(
    items: list[MemoryItem], rewards: dict[str, float], policy: ConsolidationPolicy, now: datetime
) -> list[Consolidated]:
    """Merge near-duplicates (in order of writing), then score: support x reward x decay; best first.

    ``rewards``: the mean reward of each rollout. A merged memory's age is that of its latest support, so a lesson
    learned again stays fresh.
    """
    merged: list[Consolidated] = []
    for item in sorted(items, key=lambda m: (m.occurred_at, m.memory_id)):
        unit = item.vector / (np.linalg.norm(item.vector) or 1.0)
        home = next(
            (c for c in merged if c.kind == item.kind and float(c.vector @ unit) >= policy.merge_threshold), None
        )
        if home is None:
            home = Consolidated(item.memory_id, item.text, item.kind, [], [], [], item.occurred_at, item.occurred_at,
                                vector=unit.astype(np.float32))  # fmt: skip
            merged.append(home)
        home.memory_ids.append(item.memory_id)
        home.last_at = max(home.last_at, item.occurred_at)
        if item.rollout_id and item.rollout_id not in home.rollout_ids:
            home.rollout_ids.append(item.rollout_id)
            if item.rollout_id in rewards:
                home.rewards.append(rewards[item.rollout_id])
    for c in merged:
        age_days = max((now - c.last_at).total_seconds(), 0.0) / 86400
        decay = 0.5 ** (age_days / policy.half_life_days)
        reward = 1.0 + policy.reward_weight * (c.mean_reward or 0.0)
        c.score = len(c.memory_ids) * max(reward, 0.0) * decay
    kept = [c for c in merged if c.score >= policy.min_score]
    return sorted(kept, key=lambda c: (-c.score, c.first_at, c.memory_id))
