"""Tracing in the agent process: OpenTelemetry spans of each attempt, recorded as ``span.recorded`` events.

A runner runs several attempts at once (slots) in one process, in tasks and threads, so there is one
process-wide SDK ``TracerProvider`` and the attempt a span belongs to comes from a context variable the runner
sets around each attempt (:func:`attempt_tracing`). Tasks and the agent's thread inherit it, and so does
OpenTelemetry's own current span, so a user's plain ``opentelemetry.trace.get_tracer(...)`` spans (and any
OTel-instrumented library's) are recorded for the attempt that made them, and two concurrent attempts never mix.

:class:`AttemptSpanProcessor` tags every span started inside an attempt with ``agentlightning.rollout_id`` and
``agentlightning.attempt_id`` (Agent Lightning's names; they are also put in each recorded span's resource, which
Agent Lightning sets per attempt on a provider it cannot share between concurrent attempts), and files it, once
ended, in that attempt's :class:`AttemptTrace`. A span started where the context was lost (a thread started
without ``contextvars.copy_context``) still joins its parent's attempt.

**Export.** When the agent returns, the runner drains the attempt's spans and posts them in batches through
``POST /v1/spans`` before the rewards and the outcome, resending each batch with the same Idempotency-Key until
the API answers; the spans keep their own OTel ids, so a resend is never a second copy.

**Sequence ids.** Spans are posted without sequence ids, in the order they ended, and the API numbers each
batch from its PostgreSQL counter per rollout in the request's transaction: one counter update per batch, no
Kafka round trip per span, and a total order per rollout across attempts (a later attempt's batches are
numbered after an earlier one's). A resent batch gets the numbers of its first delivery back (same key).

**Off.** With tracing off (``RunnerOptions(tracing=False)``) or outside a runner there is no current attempt:
:func:`get_tracer` answers a tracer whose spans nobody records and the emitters (``agl.emitters``) do nothing
but their ``reward.assigned`` part, so agent code runs unchanged.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from contextvars import ContextVar
from typing import TYPE_CHECKING

from opentelemetry import trace as trace_api
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanLimits, SpanProcessor, TracerProvider
from pydantic import ValidationError

from agl.span_records import ATTEMPT_ID, ROLLOUT_ID, span_in

if TYPE_CHECKING:
    from collections.abc import Iterator

    from opentelemetry.context import Context

    from producers.models import SpanIn

log = logging.getLogger("agl.tracer")

#: The instrumentation scope of the spans ``agl`` itself makes (emitters, the LLM client).
TRACER_NAME = "agl"
#: Room for an LLM call's flattened messages (OTel's default keeps 128 attributes and drops the rest).
MAX_SPAN_ATTRIBUTES = 4096


class AttemptTrace:
    """The finished spans of one attempt, filed from any thread until the runner drains them."""

    def __init__(self, rollout_id: str, attempt_id: str) -> None:
        self.rollout_id = rollout_id
        self.attempt_id = attempt_id
        self._spans: list[ReadableSpan] = []
        self._lock = threading.Lock()
        self._closed = False

    def add(self, span: ReadableSpan) -> None:
        with self._lock:
            if not self._closed:  # a span ending after the attempt was reported belongs to no report
                self._spans.append(span)

    def drain(self) -> list[SpanIn]:
        """The attempt's spans in the order they ended, as requests; later spans are dropped from now on."""
        with self._lock:
            self._closed, spans = True, list(self._spans)
            self._spans.clear()
        records: list[SpanIn] = []
        for span in spans:
            try:
                records.append(span_in(span, self.rollout_id, self.attempt_id))
            except ValidationError as e:  # one unrecordable span must not cost the attempt its report
                log.warning("attempt %s: span %r not recorded: %s", self.attempt_id, span.name, e)
        return records


_CURRENT: ContextVar[AttemptTrace | None] = ContextVar("agl_attempt_trace", default=None)
#: The attempts being traced now, by attempt id, so a span finds its attempt wherever it ends.
_OPEN: dict[str, AttemptTrace] = {}
_INSTALL_LOCK = threading.Lock()
_PROVIDER: TracerProvider | None = None
#: The tracers of ``_PROVIDER`` by name (it is set once per process).
_TRACERS: dict[str, trace_api.Tracer] = {}


class AttemptSpanProcessor(SpanProcessor):
    """Tags each span started inside an attempt with the attempt's ids and files it there once it ends."""

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        trace = _CURRENT.get() or _parents_attempt(parent_context)
        if trace is not None:
            span.set_attributes({ROLLOUT_ID: trace.rollout_id, ATTEMPT_ID: trace.attempt_id})

    def on_end(self, span: ReadableSpan) -> None:
        attempt_id = (span.attributes or {}).get(ATTEMPT_ID)
        trace = _OPEN.get(attempt_id) if isinstance(attempt_id, str) else None
        if trace is not None:
            trace.add(span)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True  # spans are filed as they end; the runner posts them


def _parents_attempt(parent_context: Context | None) -> AttemptTrace | None:
    parent = trace_api.get_current_span(parent_context)
    attributes = getattr(parent, "attributes", None) or {}
    attempt_id = attributes.get(ATTEMPT_ID)
    return _OPEN.get(attempt_id) if isinstance(attempt_id, str) else None


def install() -> TracerProvider:
    """The process's tracer provider with the attempt processor (installed once; later calls answer it).

    An SDK provider the user set up already is joined (their exporters keep working); else ours becomes the
    global one. A non-SDK global provider cannot take a processor: ours then stays private to ``agl``'s own
    spans (emitters, the LLM client), and plain OTel spans go where the user sent them.
    """
    global _PROVIDER  # noqa: PLW0603 - one provider per process is what OpenTelemetry allows
    with _INSTALL_LOCK:
        if _PROVIDER is not None:
            return _PROVIDER
        current = trace_api.get_tracer_provider()
        if isinstance(current, TracerProvider):
            provider = current
        else:
            provider = TracerProvider(
                resource=Resource.create({"service.name": "agl-runner"}),
                span_limits=SpanLimits(max_span_attributes=MAX_SPAN_ATTRIBUTES),
            )
            if isinstance(current, trace_api.ProxyTracerProvider):
                trace_api.set_tracer_provider(provider)
        provider.add_span_processor(AttemptSpanProcessor())
        _PROVIDER = provider
        return provider


@contextlib.contextmanager
def attempt_tracing(rollout_id: str, attempt_id: str, *, enabled: bool = True) -> Iterator[AttemptTrace | None]:
    """Trace the block as the attempt's: spans started inside (also in its tasks and threads) are filed for it.

    Answers the attempt's :class:`AttemptTrace` (``drain()`` it once the agent is done), or None when disabled.
    """
    if not enabled:
        yield None
        return
    install()
    trace = AttemptTrace(rollout_id, attempt_id)
    _OPEN[attempt_id] = trace
    token = _CURRENT.set(trace)
    try:
        yield trace
    finally:
        _CURRENT.reset(token)
        _OPEN.pop(attempt_id, None)


def current() -> AttemptTrace | None:
    """The attempt being traced here, or None (tracing off, or outside a runner's attempt)."""
    return _CURRENT.get()


def active() -> bool:
    return _CURRENT.get() is not None


def get_tracer(name: str = TRACER_NAME) -> trace_api.Tracer:
    """A tracer whose spans are recorded for the current attempt; outside one, a tracer nobody records."""
    if _CURRENT.get() is None or _PROVIDER is None:
        return trace_api.NoOpTracer()
    # Kept per name: the SDK builds a new tracer (and its instrumentation scope) at every call, and an attempt
    # asks at each span it emits (a tenth of a no-op agent's runner CPU went there).
    found = _TRACERS.get(name)
    if found is None:
        found = _TRACERS[name] = _PROVIDER.get_tracer(name)
    return found
