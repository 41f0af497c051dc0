"""How the router picks an agent type for a rollout: pure functions of the state and the rollout id.

``thompson`` draws, for each candidate, a value from the Beta posterior of its reward on the task kind and takes
the largest: a type with little evidence is sometimes drawn high (exploration), a type with much good evidence
usually is (exploitation). ``by_free_slots`` is the policy with learning switched off: the candidate with the most
free slots. Both draw their randomness from a generator seeded by the rollout id, so the same state and id give
the same choice; the choice is recorded anyway (``router.assigned``), and a replay reads it, never redraws it.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence


@dataclass(frozen=True)
class Evidence:
    """What is known of one (task kind, agent type): rewards as fractional successes and failures."""

    successes: float = 0.0
    failures: float = 0.0


@dataclass(frozen=True)
class Prior:
    """Beta(alpha, beta) before any reward; Beta(1, 1) is uniform on [0, 1]."""

    alpha: float = 1.0
    beta: float = 1.0


#: The default prior: no opinion.
UNIFORM = Prior()


@dataclass(frozen=True)
class Choice:
    agent_type: str
    #: per candidate, the value the choice compared (a posterior draw, or free slots)
    samples: dict[str, float]


def rng_for(rollout_id: str) -> random.Random:
    """A generator seeded by the rollout id alone (not Python's salted ``hash``): reproducible across processes."""
    seed = int.from_bytes(hashlib.sha256(rollout_id.encode()).digest()[:8], "big")
    return random.Random(seed)  # noqa: S311 - a reproducible draw, not a secret


def thompson(
    candidates: Sequence[str], evidence: Mapping[str, Evidence], rollout_id: str, prior: Prior = UNIFORM
) -> Choice:
    """The candidate whose posterior draw is largest (ties: the first in sorted order)."""
    ordered = _ordered(candidates)
    rng = rng_for(rollout_id)
    samples: dict[str, float] = {}
    for agent_type in ordered:
        seen = evidence.get(agent_type, Evidence())
        samples[agent_type] = rng.betavariate(prior.alpha + seen.successes, prior.beta + seen.failures)
    best = max(ordered, key=lambda t: samples[t])  # max keeps the first of equal values
    return Choice(best, samples)


def by_free_slots(candidates: Sequence[str], free: Mapping[str, int], rollout_id: str) -> Choice:
    """The candidate with the most free slots; a tie is broken by the rollout id, so ties spread evenly."""
    ordered = _ordered(candidates)
    most = max(free.get(t, 0) for t in ordered)
    tied = [t for t in ordered if free.get(t, 0) == most]
    chosen = tied[rng_for(rollout_id).randrange(len(tied))]
    return Choice(chosen, {t: float(free.get(t, 0)) for t in ordered})


def _ordered(candidates: Sequence[str]) -> list[str]:
    ordered = sorted(set(candidates))
    if not ordered:
        raise ValueError("the router needs at least one candidate agent type")
    return ordered
