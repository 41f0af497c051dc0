"""The event envelope every event shares."""

from __future__ import annotations

import builtins  # `type` is a field of every event: the annotation below means the builtin
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, JsonValue
from uuid_utils.compat import uuid7

M = TypeVar("M", bound=BaseModel)

#: Arbitrary JSON, as users put in inputs and metadata.
Json = JsonValue


def new_event_id() -> UUID:
    """A UUIDv7: unique, and sortable by creation time (the first 48 bits are milliseconds since the epoch)."""
    return uuid7()


def utc_now() -> datetime:
    return datetime.now(UTC)


def trusted(cls: type[M], values: dict[str, Any]) -> M:
    """An instance of ``cls`` holding ``values`` as they are: ``model_construct`` without its work per field.

    Only for values validated already under the same constraints (the members of an event that stands for
    several), with every field of ``cls`` given. Equal to what validating them gives
    (tests/schemas/test_spans_recorded.py checks it), at a quarter of ``model_construct``'s cost.
    """
    instance = cls.__new__(cls)
    object.__setattr__(instance, "__dict__", values)
    object.__setattr__(instance, "__pydantic_fields_set__", set(values))
    object.__setattr__(instance, "__pydantic_extra__", None)
    object.__setattr__(instance, "__pydantic_private__", None)
    return instance


class Frozen(BaseModel):
    """Immutable, and strict about unknown fields: a typo must fail loudly, not vanish."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Event(Frozen):
    """Base of every event. Subclasses fix ``type`` and ``version`` with ``Literal`` defaults.

    Published versions are never edited: a change is a new class version plus an ``upcast_vN_vN+1``
    static method on the current class, which ``schemas.codec.decode`` applies in order.
    """

    #: Where a producer reads the key of the record (the field whose value keeps related events ordered).
    key_field: ClassVar[str] = ""
    #: Set on an event that stands for several events of this class (recorded together, one record for all):
    #: ``members()`` gives them, and a projection that reads this class receives them in its place.
    member_type: ClassVar[builtins.type[Event] | None] = None

    event_id: UUID = Field(default_factory=new_event_id, description="unique, time-sortable (UUIDv7)")
    type: str
    version: int
    occurred_at: AwareDatetime = Field(default_factory=utc_now, description="when it happened, tz-aware")
    correlation_id: str | None = Field(default=None, description="the request or workflow this belongs to")
    causation_id: str | None = Field(default=None, description="the event or command that caused this one")
    source: str = Field(default="agl", description="who produced it, as a CloudEvents source (URI-reference)")

    def members(self) -> tuple[Event, ...]:
        """The events of ``member_type`` this one stands for (only events that set ``member_type`` have any)."""
        return ()

    def key(self) -> bytes | None:
        """The record key: related events share it, so they stay ordered in one partition."""
        value: Any = getattr(self, self.key_field, None) if self.key_field else None
        return None if value is None else str(value).encode()
