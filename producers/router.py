"""The assignment router at enqueue: a rollout naming a task kind gets an agent type, decided once and recorded.

A rollout whose ``metadata`` names a ``task_kind`` and that requires no capabilities of its own is given the
capabilities of one agent type that can serve the kind, so only that type's workers claim it. The choice is a
``router.assigned`` event committed to the outbox in the same transaction as the rollout (see
``producers.idempotency.reserve_rollouts``): a retried request stores nothing new, so it decides nothing new.

The state sampled from is two read models, read in one short snapshot and cached for ``cache_s`` (decisions may lag
the latest rewards by that much, which a bandit tolerates): the router projection's evidence per (task kind, agent
type), and the workers projection's live workers (free slots per type). Only types with a live worker are
considered when any candidate has one, so a rollout is not pinned to a type nobody runs while another could take it.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from producers.router_policy import UNIFORM, Choice, Evidence, Prior, by_free_slots, thompson
from projections import router as router_projection
from projections import workers as workers_projection
from projections.errors import ProjectionNotReady
from projections.reading import reading
from schemas import RolloutEnqueued, RouterAssigned, RouterPolicy

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from psycopg import AsyncConnection

#: The metadata key naming a rollout's task kind.
TASK_KIND_KEY = "task_kind"
#: Workers not heard from for this long are not counted as live (the workers read route's default).
DEFAULT_STALE_S = 30.0


class TaskTable(Protocol):
    """Which agent types can serve a task kind, and what a rollout pinned to one of them requires."""

    def candidates(self, task_kind: str) -> tuple[str, ...]:
        """The agent types that can serve ``task_kind``; empty for a kind the router does not know."""
        ...

    def capabilities(self, task_kind: str, agent_type: str) -> tuple[str, ...]:
        """The ``required_capabilities`` of a rollout of ``task_kind`` given to ``agent_type``."""
        ...


#: The router's own table, used until the agent types' table is plugged in (``agl.router``).
DEFAULT_KINDS: dict[str, tuple[str, ...]] = {
    "web": ("web_developer",),
    "analysis": ("data_analyst",),
    "security": ("security_expert",),
    "ops": ("devops_engineer",),
    "testing": ("qa_tester",),
    "general": ("general_assistant",),
    "python": ("data_analyst", "qa_tester", "web_developer"),
}


@dataclass(frozen=True)
class StaticTable:
    """A fixed kind -> agent types table; a chosen type is required as the capability ``agent:<type>``."""

    kinds: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_KINDS))

    def candidates(self, task_kind: str) -> tuple[str, ...]:
        return tuple(self.kinds.get(task_kind, ()))

    def capabilities(self, task_kind: str, agent_type: str) -> tuple[str, ...]:
        return (f"agent:{agent_type}",)


@dataclass(frozen=True)
class RouterState:
    evidence: dict[tuple[str, str], Evidence]
    #: free slots of live workers, per agent type (types with a live worker only)
    free: dict[str, int]


class Router:
    """Decides the agent type of routable rollouts; cheap to build (no I/O until the first decision)."""

    def __init__(
        self,
        *,
        policy: RouterPolicy = "thompson",
        prior: Prior = UNIFORM,
        table: TaskTable | None = None,
        cache_s: float = 1.0,
        stale_s: float = DEFAULT_STALE_S,
    ) -> None:
        self.policy: RouterPolicy = policy
        self.prior = prior
        self.table: TaskTable = table or StaticTable()
        self._cache_s = cache_s
        self._stale_s = stale_s
        self._cached: tuple[float, RouterState] | None = None
        self._lock = asyncio.Lock()

    async def route(
        self, conn: AsyncConnection[Any], events: Sequence[RolloutEnqueued]
    ) -> tuple[list[RolloutEnqueued], dict[str, RouterAssigned]]:
        """The events, routable ones given their agent type's capabilities, and the decision of each routed one."""
        routable = [e for e in events if self._kind_of(e) is not None]
        if not routable:
            return list(events), {}
        state = await self.state(conn)
        free = Counter(state.free)  # decisions of one request take slots from the ones after them
        decisions: dict[str, RouterAssigned] = {}
        out: list[RolloutEnqueued] = []
        for event in events:
            kind = self._kind_of(event)
            if kind is None:
                out.append(event)
                continue
            decision = self._decide(event, kind, state, free)
            decisions[event.rollout_id] = decision
            out.append(event.model_copy(update={"required_capabilities": decision.required_capabilities}))
        return out, decisions

    def _kind_of(self, event: RolloutEnqueued) -> str | None:
        kind = event.metadata.get(TASK_KIND_KEY)
        if not isinstance(kind, str) or event.required_capabilities or not self.table.candidates(kind):
            return None
        return kind

    def _decide(self, event: RolloutEnqueued, kind: str, state: RouterState, free: Counter[str]) -> RouterAssigned:
        known = self.table.candidates(kind)
        live = [t for t in known if t in state.free]
        candidates = tuple(sorted(live or known))
        choice: Choice
        if self.policy == "off":
            choice = by_free_slots(candidates, free, event.rollout_id)
            free[choice.agent_type] -= 1
        else:
            evidence = {t: state.evidence.get((kind, t), Evidence()) for t in candidates}
            choice = thompson(candidates, evidence, event.rollout_id, self.prior)
        return RouterAssigned(
            rollout_id=event.rollout_id,
            task_kind=kind,
            agent_type=choice.agent_type,
            candidates=candidates,
            samples=choice.samples,
            policy=self.policy,
            prior_alpha=self.prior.alpha,
            prior_beta=self.prior.beta,
            required_capabilities=self.table.capabilities(kind, choice.agent_type),
            source=event.source,
            correlation_id=event.correlation_id,
        )

    async def state(self, conn: AsyncConnection[Any]) -> RouterState:
        """The sampled state, read at most once per ``cache_s`` (concurrent requests share one read)."""
        async with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] >= self._cache_s:
                self._cached = (now, await read_state(conn, stale_s=self._stale_s))
            return self._cached[1]


async def read_state(conn: AsyncConnection[Any], *, stale_s: float) -> RouterState:
    """Evidence per (kind, type) and live workers' free slots per type; a read model not yet built reads empty."""
    evidence: dict[tuple[str, str], Evidence] = {}
    try:
        async with reading(conn, router_projection.PROJECTION):
            for key, arm in (await router_projection.load_arms(conn)).items():
                evidence[key] = Evidence(arm.successes, arm.failures)
    except ProjectionNotReady:
        pass  # no decision has been folded yet: every arm is at its prior
    free: dict[str, int] = {}
    try:
        async with reading(conn, workers_projection.PROJECTION):
            workers, _ = await workers_projection.list_workers(
                conn, stale_s=stale_s, status=("idle", "busy"), limit=100_000
            )
    except ProjectionNotReady:
        workers = []
    for worker in workers:
        for capability in worker.capabilities:
            if capability.startswith("agent:"):
                agent_type = capability.removeprefix("agent:")
                free[agent_type] = free.get(agent_type, 0) + max(0, (worker.slots or 1) - worker.busy_slots)
    return RouterState(evidence, free)


async def routed(
    router: Router | None, conn: AsyncConnection[Any], planned: Sequence[tuple[RolloutEnqueued, str]]
) -> tuple[list[tuple[RolloutEnqueued, str]], dict[str, RouterAssigned]]:
    """The command API's hook: (event, request digest) pairs with routable events routed, and the decisions."""
    if router is None:
        return list(planned), {}
    events, decisions = await router.route(conn, [e for e, _ in planned])
    return [(e, digest) for e, (_, digest) in zip(events, planned, strict=True)], decisions
