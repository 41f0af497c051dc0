"""What the runner (:mod:`agl.runner`) works with, apart from its loops: its options, the record of each
attempt it ran, its backoff, and the state it keeps for an attempt while the attempt runs.

Kept apart so :class:`~agl.runner.Runner` holds only what it does (claim, run, report, beat, drain); everything
here is plain data or a small helper without I/O. :mod:`agl.runner` re-exports the public names.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import traceback
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from producers.models import SpanIn
from schemas import ErrorInfo

if TYPE_CHECKING:
    from producers.lifecycle_models import ClaimOut as Claim
    from producers.lifecycle_models import VerdictOut as Verdict


@dataclass(frozen=True)
class RunnerOptions:
    slots: int = 1
    capabilities: tuple[str, ...] = ()
    worker_id: str | None = None
    #: Stop claiming after this many claims (then finish them and exit); None = no limit.
    max_rollouts: int | None = None
    #: Exit after this long with nothing to run and nothing claimed; None = never.
    idle_exit_s: float | None = None
    heartbeat_s: float = 5.0
    #: How long one dequeue may wait in the API for a claimable rollout (a long poll, not a spin).
    poll_wait_ms: int = 5000
    drain_grace_s: float = 30.0
    #: How long pinned resources may be missing (not yet in the read model) before the attempt fails.
    resources_wait_s: float = 10.0
    version: str | None = None
    keep_records: int = 10_000
    #: Record each attempt's OpenTelemetry spans (``agl.tracer``); off, emitters record no spans.
    tracing: bool = True
    #: Whose memories ``agl.memory.remember`` / ``recall`` reach inside an attempt; None = the agent's name.
    memory_agent_id: str | None = None


AttemptEnd = Literal["succeeded", "failed", "cancelled", "refused", "shutdown"]


@dataclass(frozen=True)
class AttemptRecord:
    """What this runner did with one attempt (kept for ``agl.dev`` and for callers that inspect a run)."""

    rollout_id: str
    attempt_id: str
    end: AttemptEnd
    rewards: tuple[float, ...] = ()
    error: ErrorInfo | None = None
    verdict: Verdict | None = None


class Backoff:
    """Exponential backoff with full jitter, so runners cut off together do not come back in step."""

    def __init__(self, base_s: float = 0.2, cap_s: float = 10.0) -> None:
        self.base_s, self.cap_s, self.failures = base_s, cap_s, 0

    def next_delay(self) -> float:
        self.failures += 1
        ceiling: float = min(self.cap_s, self.base_s * 2 ** (self.failures - 1))
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not cryptography


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass
class _Active:
    claim: Claim
    task: asyncio.Task[None] | None = None
    agent_task: asyncio.Future[Any] | None = None
    running: bool = False
    cancelled_by_api: bool = False


@dataclass
class _Failure:
    error: ErrorInfo
    #: What the attempt traced before it failed: reported too, it tells why.
    spans: list[SpanIn] = field(default_factory=list)


def _error_info(exc: BaseException) -> ErrorInfo:
    trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return ErrorInfo(type=type(exc).__name__, message=str(exc), traceback=trace)
