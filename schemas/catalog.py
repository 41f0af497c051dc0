"""The event catalogue: every event class, the decoding union, and which topic each event goes to."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, TypeAdapter

from schemas import topics
from schemas._base import Event
from schemas.attempts import AttemptFinished, AttemptHeartbeat, AttemptStarted
from schemas.audit import ApiKeyCreated, ApiKeyRevoked
from schemas.knowledge import ChunksEmbedded, ContextRetrieved, DocumentDeleted, DocumentUpserted
from schemas.resources import ResourcesPublished
from schemas.rewards import RewardAssigned
from schemas.rollouts import RolloutCancelled, RolloutEnqueued, RolloutRequeued
from schemas.router import RouterAssigned
from schemas.spans import SpanRecorded, SpansRecorded
from schemas.traces import SpanUnattached
from schemas.transitions import RolloutTransitioned
from schemas.workers import WorkerDeregistered, WorkerHeartbeat, WorkerRegistered

#: Topic of each event class; the topic's key is the event's ``key_field``.
TOPIC_BY_EVENT: dict[type[Event], topics.TopicSpec] = {
    RolloutEnqueued: topics.ROLLOUTS,
    RolloutCancelled: topics.ROLLOUTS,
    RolloutRequeued: topics.ROLLOUTS,
    RolloutTransitioned: topics.ROLLOUTS,
    RouterAssigned: topics.ROLLOUTS,
    AttemptStarted: topics.ATTEMPTS,
    AttemptHeartbeat: topics.ATTEMPTS,
    AttemptFinished: topics.ATTEMPTS,
    SpanRecorded: topics.SPANS,
    SpansRecorded: topics.SPANS,
    RewardAssigned: topics.REWARDS,
    ResourcesPublished: topics.RESOURCES,
    DocumentUpserted: topics.KNOWLEDGE,
    DocumentDeleted: topics.KNOWLEDGE,
    ChunksEmbedded: topics.KNOWLEDGE,
    ContextRetrieved: topics.ATTEMPTS,
    WorkerRegistered: topics.WORKERS,
    WorkerHeartbeat: topics.WORKERS,
    WorkerDeregistered: topics.WORKERS,
    SpanUnattached: topics.TRACES,
    ApiKeyCreated: topics.AUDIT,
    ApiKeyRevoked: topics.AUDIT,
}

EVENT_TYPES: tuple[type[Event], ...] = tuple(TOPIC_BY_EVENT)
EVENT_BY_TYPE: dict[str, type[Event]] = {cls.model_fields["type"].default: cls for cls in EVENT_TYPES}

AnyEvent = Annotated[
    RolloutEnqueued
    | RolloutCancelled
    | RolloutRequeued
    | RolloutTransitioned
    | RouterAssigned
    | AttemptStarted
    | AttemptHeartbeat
    | AttemptFinished
    | SpanRecorded
    | SpansRecorded
    | RewardAssigned
    | ResourcesPublished
    | DocumentUpserted
    | DocumentDeleted
    | ChunksEmbedded
    | ContextRetrieved
    | WorkerRegistered
    | WorkerHeartbeat
    | WorkerDeregistered
    | SpanUnattached
    | ApiKeyCreated
    | ApiKeyRevoked,
    Field(discriminator="type"),
]
ANY_EVENT: TypeAdapter[AnyEvent] = TypeAdapter(AnyEvent)


def event_type(cls: type[Event]) -> str:
    value: str = cls.model_fields["type"].default
    return value


def current_version(cls: type[Event]) -> int:
    value: int = cls.model_fields["version"].default
    return value


#: Who writes each event and who reads it, for the README's event catalogue and the AsyncAPI document.
ROLES: dict[type[Event], tuple[str, str]] = {
    RolloutEnqueued: ("command API `POST /v1/rollouts`, SDK, through the outbox", "rollouts projection"),
    RolloutCancelled: ("command API `POST /v1/rollouts/{id}/cancel`, through the outbox", "rollouts projection"),
    RolloutRequeued: ("lifecycle decider (retry policy, watchdog), through the outbox", "rollouts projection"),
    RolloutTransitioned: (
        "lifecycle decider (claims, runner reports, watchdog, cancel), through the outbox",
        "rollouts projection (statuses)",
    ),
    RouterAssigned: (
        "command API `POST /v1/rollouts` (a rollout naming a `task_kind`), through the outbox",
        "router projection",
    ),
    AttemptStarted: (
        "the decider's claims, until `rollout.transitioned` v2 carried the start (still read in earlier logs)",
        "rollouts projection (attempts)",
    ),
    AttemptHeartbeat: ("lifecycle decider (a runner's heartbeat), through the outbox", "rollouts projection"),
    AttemptFinished: (
        "the decider's ends, until `rollout.transitioned` v2 carried the end (still read in earlier logs)",
        "rollouts projection",
    ),
    SpanRecorded: ("command API `POST /v1/spans`, SDK, runner tracer", "spans and triplet projections"),
    SpansRecorded: (
        "command API: an attempt's finish report (`POST /v1/workers/{id}/reports`)",
        "projections that read `span.recorded` (spans, triplets, episodes), as its members",
    ),
    RewardAssigned: ("command API `POST /v1/rewards`, SDK, runner", "triplet projection, rollouts projection"),
    ResourcesPublished: ("command API `POST /v1/resources`, SDK, algorithms", "resources projection, runner"),
    DocumentUpserted: ("command API `POST /v1/knowledge/documents`, SDK", "knowledge indexer (pgvector)"),
    DocumentDeleted: ("command API `DELETE /v1/knowledge/documents/{id}`, SDK", "knowledge indexer (pgvector)"),
    ChunksEmbedded: ("knowledge indexer (`agl knowledge indexer`)", "knowledge projection (pgvector, full text)"),
    ContextRetrieved: ("runner, before the agent starts (`knowledge.context`)", "archive; replays of an attempt"),
    WorkerRegistered: ("runner", "workers projection"),
    WorkerHeartbeat: ("runner", "workers projection"),
    WorkerDeregistered: ("runner", "workers projection"),
    SpanUnattached: (
        "OTLP receiver `POST /v1/traces` (spans without rollout and attempt ids), through the outbox",
        "archive (`archive_g<N>.events`); any consumer of the traces topic",
    ),
    ApiKeyCreated: (
        "`agl keys create`, `agl up` (the local admin key), through the outbox",
        "archive (the audit trail)",
    ),
    ApiKeyRevoked: ("`agl keys revoke`, through the outbox", "archive (the audit trail)"),
}
