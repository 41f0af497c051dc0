"""The event catalogue: every event class, the decoding union, and which topic each event goes to."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, TypeAdapter

from schemas import topics
from schemas._base import Event
from schemas.attempts import AttemptFinished, AttemptHeartbeat, AttemptStarted
from schemas.knowledge import DocumentDeleted, DocumentUpserted
from schemas.resources import ResourcesPublished
from schemas.rewards import RewardAssigned
from schemas.rollouts import RolloutCancelled, RolloutEnqueued, RolloutRequeued
from schemas.spans import SpanRecorded
from schemas.workers import WorkerDeregistered, WorkerHeartbeat, WorkerRegistered

#: Topic of each event class; the topic's key is the event's ``key_field``.
TOPIC_BY_EVENT: dict[type[Event], topics.TopicSpec] = {
    RolloutEnqueued: topics.ROLLOUTS,
    RolloutCancelled: topics.ROLLOUTS,
    RolloutRequeued: topics.ROLLOUTS,
    AttemptStarted: topics.ATTEMPTS,
    AttemptHeartbeat: topics.ATTEMPTS,
    AttemptFinished: topics.ATTEMPTS,
    SpanRecorded: topics.SPANS,
    RewardAssigned: topics.REWARDS,
    ResourcesPublished: topics.RESOURCES,
    DocumentUpserted: topics.KNOWLEDGE,
    DocumentDeleted: topics.KNOWLEDGE,
    WorkerRegistered: topics.WORKERS,
    WorkerHeartbeat: topics.WORKERS,
    WorkerDeregistered: topics.WORKERS,
}

EVENT_TYPES: tuple[type[Event], ...] = tuple(TOPIC_BY_EVENT)
EVENT_BY_TYPE: dict[str, type[Event]] = {cls.model_fields["type"].default: cls for cls in EVENT_TYPES}

AnyEvent = Annotated[
    RolloutEnqueued
    | RolloutCancelled
    | RolloutRequeued
    | AttemptStarted
    | AttemptHeartbeat
    | AttemptFinished
    | SpanRecorded
    | RewardAssigned
    | ResourcesPublished
    | DocumentUpserted
    | DocumentDeleted
    | WorkerRegistered
    | WorkerHeartbeat
    | WorkerDeregistered,
    Field(discriminator="type"),
]
ANY_EVENT: TypeAdapter[AnyEvent] = TypeAdapter(AnyEvent)


def event_type(cls: type[Event]) -> str:
    value: str = cls.model_fields["type"].default
    return value


def current_version(cls: type[Event]) -> int:
    value: int = cls.model_fields["version"].default
    return value
