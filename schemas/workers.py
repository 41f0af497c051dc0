"""Workers: runner processes announcing themselves, their liveness and their departure. Keyed by worker_id."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from schemas._base import Event, Json
from schemas.bounds import INT4_MAX, MAX_ID_LENGTH


class WorkerRegistered(Event):
    key_field: ClassVar[str] = "worker_id"
    type: Literal["worker.registered"] = "worker.registered"
    version: Literal[1] = 1
    worker_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    capabilities: tuple[str, ...] = ()
    concurrency: int = Field(default=1, ge=1, le=INT4_MAX)


class WorkerHeartbeat(Event):
    key_field: ClassVar[str] = "worker_id"
    type: Literal["worker.heartbeat"] = "worker.heartbeat"
    version: Literal[1] = 1
    worker_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    stats: dict[str, Json] = Field(default_factory=dict, description="cpu, memory, gpu, current ids...")


class WorkerDeregistered(Event):
    key_field: ClassVar[str] = "worker_id"
    type: Literal["worker.deregistered"] = "worker.deregistered"
    version: Literal[1] = 1
    worker_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    reason: str | None = None
