"""The topic registry: every topic the system uses, created explicitly from here (never auto-created).

Event topics keep their records forever (``retention.ms=-1``): the log is the source of truth, and read
models are rebuilt from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Keep every record forever; compaction would drop history a rebuild needs.
FOREVER: dict[str, str] = {"retention.ms": "-1", "retention.bytes": "-1", "cleanup.policy": "delete"}


@dataclass(frozen=True)
class TopicSpec:
    """One topic: its base name (without the deployment prefix), partitions, what its key is, its configs."""

    name: str
    partitions: int
    key: str
    configs: dict[str, str] = field(default_factory=lambda: dict(FOREVER))
    description: str = ""

    def full_name(self, prefix: str = "") -> str:
        return f"{prefix}{self.name}"


#: Written once per log: the first record names the log's epoch, so a reset broker is recognised.
META = TopicSpec("agl.meta.v1", 1, "none", description="log epoch markers of this broker's history")

ROLLOUTS = TopicSpec("agl.rollouts.v1", 4, "rollout_id", description="rollouts enqueued, cancelled, requeued")
ATTEMPTS = TopicSpec("agl.attempts.v1", 4, "rollout_id", description="attempts started, heartbeats, finished")
SPANS = TopicSpec("agl.spans.v1", 4, "rollout_id", description="OpenTelemetry spans of rollouts")
REWARDS = TopicSpec("agl.rewards.v1", 4, "rollout_id", description="rewards assigned to rollouts and spans")
RESOURCES = TopicSpec("agl.resources.v1", 1, "resources_id", description="versioned resources published")
KNOWLEDGE = TopicSpec("agl.knowledge.v1", 4, "document_id", description="knowledge documents upserted, deleted")
WORKERS = TopicSpec("agl.workers.v1", 1, "worker_id", description="worker lifecycle and heartbeats")
TRACES = TopicSpec(
    "agl.traces.v1", 4, "trace_id", description="OpenTelemetry spans that name no rollout (unattached traces)"
)

AUDIT = TopicSpec("agl.audit.v1", 1, "key_id", description="API keys created and revoked (never their secrets)")

TOPICS: tuple[TopicSpec, ...] = (
    META, ROLLOUTS, ATTEMPTS, SPANS, REWARDS, RESOURCES, KNOWLEDGE, WORKERS, TRACES, AUDIT,
)  # fmt: skip


#: Round trips of `agl smoke`; kept for a day only, since these records are not events.
SMOKE = TopicSpec("agl.smoke.v1", 1, "none", configs={"retention.ms": "86400000"}, description="smoke-test round trips")
INTERNAL_TOPICS: tuple[TopicSpec, ...] = (SMOKE,)
TOPIC_BY_NAME: dict[str, TopicSpec] = {t.name: t for t in (*TOPICS, *INTERNAL_TOPICS)}
