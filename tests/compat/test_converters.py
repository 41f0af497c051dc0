"""Conversions of Agent Lightning's wire shapes, without services: the OpenTelemetry SDK's own span JSON (what v0.1
clients post) and v0.3 spans, into our span requests and back."""

from __future__ import annotations

import json

import pytest
from fastapi.exceptions import RequestValidationError
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from producers.agl_compat.convert import resource_in, resource_out, span_in, span_out
from producers.agl_compat.deps import as_422
from producers.agl_compat.models import Span
from producers.agl_compat.otel_json import span_request


def test_the_sdk_span_json_becomes_our_span() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    with (
        tracer.start_as_current_span("agent") as parent,
        tracer.start_as_current_span("llm", kind=SpanKind.CLIENT) as child,
    ):
        child.set_attribute("gen_ai.prompt.0.content", "2+2?")
        child.add_event("token", {"n": 1})
        child.set_status(Status(StatusCode.ERROR, "boom"))
    child_json, parent_json = (json.loads(s.to_json()) for s in exporter.get_finished_spans())

    ours = span_request(child_json, "ro-1", "at-1")

    assert (ours.trace_id, ours.span_id) == (
        f"{child.get_span_context().trace_id:032x}",
        f"{child.get_span_context().span_id:016x}",
    )
    assert ours.parent_id == f"{parent.get_span_context().span_id:016x}"
    assert (ours.kind, ours.status.status_code, ours.status.description) == ("CLIENT", "ERROR", "boom")
    assert ours.attributes == {"gen_ai.prompt.0.content": "2+2?"}
    assert [(e.name, e.attributes) for e in ours.events] == [("token", {"n": 1})]
    assert ours.end_time is not None and ours.start_time <= ours.end_time
    assert ours.sequence_id is None, "the server numbers v0.1 spans"
    assert span_request(parent_json, "ro-1", "at-1").parent_id is None


def test_a_v03_span_round_trips_through_our_columns() -> None:
    link = {"context": {"trace_id": "c" * 32, "span_id": "d" * 16, "is_remote": False, "trace_state": {}}}
    theirs = Span(
        rollout_id="ro-1", attempt_id="at-1", sequence_id=7, trace_id="a" * 32, span_id="b" * 16, parent_id=None,
        name="agentlightning.annotation", status={"status_code": "OK"},
        attributes={"agentlightning.reward.0.value": 1.0},
        events=[{"name": "e", "attributes": {}, "timestamp": 1795618428.5}], links=[link | {"attributes": None}],
        start_time=1795618428.25, end_time=1795618428.75, resource={"attributes": {"x": 1}, "schema_url": ""},
    )  # fmt: skip
    ours = span_in(theirs)
    assert ours.sequence_id == 7, "their sequence id is kept"
    row = ours.model_dump() | {"status_code": "OK", "status_description": None}
    row["events"] = [e.model_dump() for e in ours.events]
    row["links"] = [link.model_dump() for link in ours.links]
    back = span_out(row)
    assert back.model_dump(exclude={"events"}) == theirs.model_dump(exclude={"events"})
    assert back.events[0]["timestamp"] == 1795618428.5


def test_an_api_key_never_reaches_the_log() -> None:
    llm = {"resource_type": "llm", "endpoint": "http://x/v1", "model": "m", "api_key": "sk-secret"}
    assert "api_key" not in resource_in(llm)
    assert resource_out(resource_in(llm) | {"api_key_ref": "env:KEY"})["api_key"] is None


@pytest.mark.parametrize(
    ("start", "events"),
    [(1e17, []), (4.3e16, []), (1.0, [{"name": "e", "timestamp": "soon"}])],
    ids=["overflow", "year", "not-a-number"],
)
def test_a_span_time_no_datetime_can_hold_is_a_422_not_a_500(start: float, events: list[dict[str, object]]) -> None:
    # Found by the API fuzzer: their model takes any float (and any event dict); 4.3e16 s is the year ~1.4e9.
    span = Span(rollout_id="ro-1", attempt_id="at-1", sequence_id=1, trace_id="0" * 32, span_id="1" * 16,
                name="s", start_time=start, events=events)  # fmt: skip
    with pytest.raises(RequestValidationError) as refused, as_422():
        span_in(span)
    assert [e["type"] for e in refused.value.errors()] == ["value_error"]
