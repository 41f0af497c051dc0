"""The event language: typed, versioned, immutable events and their wire format.

Import from here (``from schemas import RewardAssigned``), never from the modules behind it.
"""

from schemas._base import Event, new_event_id
from schemas.attempts import AttemptEndStatus, AttemptFinished, AttemptHeartbeat, AttemptStarted, ErrorInfo
from schemas.audit import ApiKeyCreated, ApiKeyRevoked, ApiKeyScope
from schemas.catalog import ANY_EVENT, EVENT_BY_TYPE, EVENT_TYPES, TOPIC_BY_EVENT, AnyEvent
from schemas.codec import decode, decode_dict, encode
from schemas.errors import DecodeError, MalformedEvent, UnknownEventType
from schemas.knowledge import ChunksEmbedded, ContextRetrieved, DocumentDeleted, DocumentUpserted, EmbeddedChunk
from schemas.position import InvalidPositionToken, Position, parse_token, to_token
from schemas.resources import LLMResource, PromptTemplateResource, ProxyLLMResource, Resource, ResourcesPublished
from schemas.rewards import RewardAssigned
from schemas.rollouts import RolloutCancelled, RolloutConfig, RolloutEnqueued, RolloutMode, RolloutRequeued
from schemas.router import RouterAssigned, RouterPolicy
from schemas.spans import RecordedSpan, SpanEvent, SpanLink, SpanRecorded, SpansRecorded, SpanStatus
from schemas.topics import TOPICS, TopicSpec
from schemas.traces import SpanUnattached
from schemas.transitions import TERMINAL_STATUSES, AttemptStatus, RolloutStatus, RolloutTransitioned
from schemas.workers import WorkerDeregistered, WorkerHeartbeat, WorkerRegistered

__all__ = [
    "ANY_EVENT",
    "EVENT_BY_TYPE",
    "EVENT_TYPES",
    "TERMINAL_STATUSES",
    "TOPICS",
    "TOPIC_BY_EVENT",
    "AnyEvent",
    "ApiKeyCreated",
    "ApiKeyRevoked",
    "ApiKeyScope",
    "AttemptEndStatus",
    "AttemptFinished",
    "AttemptHeartbeat",
    "AttemptStarted",
    "AttemptStatus",
    "ChunksEmbedded",
    "ContextRetrieved",
    "DecodeError",
    "DocumentDeleted",
    "DocumentUpserted",
    "EmbeddedChunk",
    "ErrorInfo",
    "Event",
    "InvalidPositionToken",
    "LLMResource",
    "MalformedEvent",
    "Position",
    "PromptTemplateResource",
    "ProxyLLMResource",
    "RecordedSpan",
    "Resource",
    "ResourcesPublished",
    "RewardAssigned",
    "RolloutCancelled",
    "RolloutConfig",
    "RolloutEnqueued",
    "RolloutMode",
    "RolloutRequeued",
    "RolloutStatus",
    "RolloutTransitioned",
    "RouterAssigned",
    "RouterPolicy",
    "SpanEvent",
    "SpanLink",
    "SpanRecorded",
    "SpanStatus",
    "SpanUnattached",
    "SpansRecorded",
    "TopicSpec",
    "UnknownEventType",
    "WorkerDeregistered",
    "WorkerHeartbeat",
    "WorkerRegistered",
    "decode",
    "decode_dict",
    "encode",
    "new_event_id",
    "parse_token",
    "to_token",
]
