"""The router read model: per (task kind, agent type), how often the router chose it and what it earned.

It folds two facts of each routed rollout: its ``router.assigned`` decision (rollouts topic) and its first
rollout-level ``reward.assigned`` (rewards topic; span and response rewards are not the rollout's outcome). Both
topics are keyed by rollout_id, but no order holds between topics, so either may come first: each is written once
into the rollout's row (first wins), and the arm is credited when the second of the two arrives. That makes every
event idempotent (a copy changes nothing) and the totals independent of how partitions interleave; sums are
``numeric``, so even their last digits do not depend on the order of additions.

The enqueue path reads :func:`load_arms` to sample its next decisions; ``GET /v1/router`` serves :func:`list_arms`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from psycopg.rows import class_row

from projections.base import BACKGROUND_LINGER_MS, Envelope, Projection
from projections.migrations import load_package_migrations
from schemas import RewardAssigned, RouterAssigned
from schemas.topics import REWARDS, ROLLOUTS

if TYPE_CHECKING:
    from psycopg import AsyncConnection


@dataclass(frozen=True)
class ArmRow:
    task_kind: str
    agent_type: str
    assignments: int
    rewarded: int
    reward_sum: float
    successes: float
    failures: float


# Each statement writes the rollout's row (first wins) and, from what that row then holds, credits its arm; the CTE
# is empty when the row did not change (a copy, or a second reward), and the arm is credited only once the row has
# an agent type.
_ARMS_UPSERT = """
INSERT INTO router_arms AS a (task_kind, agent_type, assignments, rewarded, reward_sum, successes, failures)
SELECT task_kind, agent_type, %s, (reward IS NOT NULL)::int, coalesce(reward, 0),
       -- greatest() and least() skip NULLs, hence the CASE: no reward is no evidence at all
       CASE WHEN reward IS NULL THEN 0 ELSE least(greatest(reward, 0), 1) END,
       CASE WHEN reward IS NULL THEN 0 ELSE 1 - least(greatest(reward, 0), 1) END
FROM up WHERE agent_type IS NOT NULL
ON CONFLICT (task_kind, agent_type) DO UPDATE SET
    assignments = a.assignments + EXCLUDED.assignments, rewarded = a.rewarded + EXCLUDED.rewarded,
    reward_sum = a.reward_sum + EXCLUDED.reward_sum, successes = a.successes + EXCLUDED.successes,
    failures = a.failures + EXCLUDED.failures
"""
_DECIDED = """
WITH up AS (
    INSERT INTO router_rollouts AS r (rollout_id, task_kind, agent_type, policy, decided_at) VALUES (%s, %s, %s, %s, %s)
    ON CONFLICT (rollout_id) DO UPDATE SET task_kind = EXCLUDED.task_kind, agent_type = EXCLUDED.agent_type,
        policy = EXCLUDED.policy, decided_at = EXCLUDED.decided_at
    WHERE r.agent_type IS NULL
    RETURNING task_kind, agent_type, reward
)"""
# Only the reward is credited here (assignments + 0): the assignment was counted when the decision was folded.
_REWARDED = """
WITH up AS (
    INSERT INTO router_rollouts AS r (rollout_id, reward, reward_event) VALUES (%s, %s::float8::numeric, %s)
    ON CONFLICT (rollout_id) DO UPDATE SET reward = EXCLUDED.reward, reward_event = EXCLUDED.reward_event
    WHERE r.reward IS NULL
    RETURNING task_kind, agent_type, reward
)"""


def is_outcome(event: RewardAssigned) -> bool:
    """Whether a reward is a rollout's outcome (not a reward of one span or one LLM response)."""
    return event.span_id is None and event.response_id is None


async def apply(envelopes: Sequence[Envelope], conn: AsyncConnection[Any]) -> None:
    """Fold decisions and outcome rewards in log order; each statement writes the rollout's row and its arm."""
    async with conn.cursor() as cur:
        for envelope in envelopes:
            event = envelope.event
            if isinstance(event, RouterAssigned):
                params: tuple[Any, ...] = (
                    event.rollout_id, event.task_kind, event.agent_type, event.policy, event.occurred_at,
                )  # fmt: skip
                await cur.execute(_DECIDED + _ARMS_UPSERT, (*params, 1))
            elif isinstance(event, RewardAssigned) and is_outcome(event):
                await cur.execute(_REWARDED + _ARMS_UPSERT, (event.rollout_id, event.value, event.event_id, 0))


# -- read queries (run with search_path at the active generation) --------------------------------------------------
_ARM_COLS = "task_kind, agent_type, assignments, rewarded, reward_sum::float8, successes::float8, failures::float8"


async def list_arms(conn: AsyncConnection[Any], task_kind: str | None = None) -> list[ArmRow]:
    """Every arm (of ``task_kind`` when given), by task kind then agent type."""
    async with conn.cursor(row_factory=class_row(ArmRow)) as cur:
        await cur.execute(
            f"SELECT {_ARM_COLS} FROM router_arms"  # noqa: S608 - constant columns
            " WHERE %(kind)s::text IS NULL OR task_kind = %(kind)s ORDER BY task_kind, agent_type",
            {"kind": task_kind},
        )
        return await cur.fetchall()


async def load_arms(conn: AsyncConnection[Any]) -> dict[tuple[str, str], ArmRow]:
    """Every arm by (task kind, agent type): the state the router samples from."""
    return {(a.task_kind, a.agent_type): a for a in await list_arms(conn)}


PROJECTION = Projection(
    name="router",
    version=1,
    topics=(ROLLOUTS, REWARDS),
    event_types=frozenset({RouterAssigned, RewardAssigned}),
    migrations=tuple(load_package_migrations("projections", "sql/router")),
    apply=apply,
    tables=("router_rollouts", "router_arms"),
    idempotent_types=frozenset({RouterAssigned, RewardAssigned}),
    linger_ms=BACKGROUND_LINGER_MS,
    description="assignment router: decisions and rewards per (task kind, agent type) (GET /v1/router)",
)
