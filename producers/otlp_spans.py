"""OTLP spans to events: ``span.recorded`` for a rollout's spans, ``trace.span_unattached`` for the others.

Ids are resolved per span exactly as Agent Lightning's receiver does: the span attributes
``agentlightning.rollout_id``, ``agentlightning.attempt_id`` and ``agentlightning.span_sequence_id`` override the
resource attributes of the same names (a resource-level sequence id is shared by every span of that resource,
which is how a proxy tags a whole request subtree). A sequence id that is missing, not an integer or negative is
numbered later from the rollout's counter. Where we differ on purpose: a span without both ids is kept as an
unattached span (Agent Lightning drops it), and a span that cannot be stored is rejected on its own and counted
(Agent Lightning answers success for it).

The mapping is faithful: kind, status, events, links, span and resource attributes (an ``AnyValue`` becomes JSON:
arrays and key-value lists nest, bytes become base64 text, int64 stays an integer); timestamps keep microseconds
(the events' datetimes cannot hold nanoseconds). Instrumentation scope, trace state, flags and dropped counts have
no field in the events and are not kept.

A span is rejected (and counted in the answer's ``partial_success``) when its ids are invalid (a trace id of 16
bytes and a span id of 8, neither all zero), its start time is missing or after its end, one of its ids is not
an id the API can serve (``schemas.bounds.ID_PATTERN``), a text holds NUL (PostgreSQL cannot store it) or a number
is not finite (not JSON), as ``producers.input_guard`` rules for other routes, or its event is larger than the
largest record the publisher sends. (A lone surrogate cannot reach a span: protobuf strings are UTF-8, and a JSON
body holding one does not decode, 400.)
"""

from __future__ import annotations

import base64
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from schemas import SpanEvent, SpanLink, SpanRecorded, SpanStatus, SpanUnattached
from schemas._base import new_event_id, utc_now
from schemas.bounds import BIGINT_MAX, ID_PATTERN
from schemas.codec import encode_value

if TYPE_CHECKING:
    from collections.abc import Iterable

    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    from schemas._base import Json
    from schemas.spans import SpanKind, StatusCode

ROLLOUT_ID = "agentlightning.rollout_id"
ATTEMPT_ID = "agentlightning.attempt_id"
SEQUENCE_ID = "agentlightning.span_sequence_id"

#: OTLP's span kinds; 0 (unspecified) and unknown values are INTERNAL, as the specification allows.
_KINDS: dict[int, SpanKind] = {1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
#: OTLP's status codes; an unknown value is UNSET.
_STATUS: dict[int, StatusCode] = {0: "UNSET", 1: "OK", 2: "ERROR"}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ID = re.compile(ID_PATTERN)
#: How many rejection reasons the answer's message names (the count is always exact).
_REASONS_SHOWN = 5


class _Rejected(Exception):
    pass


@dataclass(frozen=True)
class Draft:
    """A rollout's span before numbering: its event carries the client's sequence id, or ``BIGINT_MAX`` (the
    longest number, so the size check holds for any number the counter gives) until it is numbered."""

    event: SpanRecorded
    numbered: bool


@dataclass
class Mapped:
    """What a request becomes: events to commit, and a reason for each span rejected."""

    attached: list[Draft] = field(default_factory=list)
    unattached: list[SpanUnattached] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)

    def message(self) -> str:
        """The answer's ``error_message``: the spans rejected with the first reasons, and a warning about spans
        kept unattached (the specification's way to warn: ``partial_success`` with nothing rejected)."""
        parts = []
        if self.rejected:
            shown = "; ".join(self.rejected[:_REASONS_SHOWN])
            more = f"; and {len(self.rejected) - _REASONS_SHOWN} more" if len(self.rejected) > _REASONS_SHOWN else ""
            parts.append(f"{len(self.rejected)} span(s) rejected: {shown}{more}")
        if self.unattached:
            parts.append(
                f"{len(self.unattached)} span(s) name no {ROLLOUT_ID} and {ATTEMPT_ID}: kept as"
                " trace.span_unattached events (topic agl.traces.v1), not in any rollout"
            )
        return ". ".join(parts)


def map_request(request: ExportTraceServiceRequest, *, envelope: dict[str, Any], max_event_bytes: int) -> Mapped:
    """Every span of ``request`` as an event to commit or a rejection; ``envelope`` goes into every event."""
    mapped = Mapped()
    # The envelope's defaults given, not left to model_construct: it inspects each default factory per event.
    envelope = {"occurred_at": utc_now(), "causation_id": None, **envelope}
    for resource_spans in request.resource_spans:
        try:
            resource: dict[str, Json] | _Rejected = attributes_of(resource_spans.resource.attributes, "resource")
        except _Rejected as e:
            resource = e  # every span of this resource is rejected, for this reason
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                try:
                    if isinstance(resource, _Rejected):
                        raise resource
                    _map_span(span, resource, envelope, max_event_bytes, mapped)
                except _Rejected as e:
                    mapped.rejected.append(f"span {span.span_id.hex() or '(no id)'}: {e}")
    return mapped


def _map_span(
    span: Span, resource: dict[str, Json], envelope: dict[str, Any], max_event_bytes: int, mapped: Mapped
) -> None:
    attributes = attributes_of(span.attributes, "attributes")
    fields: dict[str, Any] = {
        "trace_id": _id(span.trace_id, 16, "trace_id"),
        "span_id": _id(span.span_id, 8, "span_id"),
        "parent_id": _parent_id(span.parent_span_id),
        "name": _text(span.name, "name"),
        "kind": _KINDS.get(span.kind, "INTERNAL"),
        "status": SpanStatus.model_construct(
            status_code=_STATUS.get(span.status.code, "UNSET"),
            description=_text(span.status.message, "status.message") or None,
        ),
        "attributes": attributes,
        "events": tuple(
            SpanEvent.model_construct(
                name=_text(e.name, "events.name"),
                timestamp=_time(e.time_unix_nano),
                attributes=attributes_of(e.attributes, "events.attributes"),
            )
            for e in span.events
        ),
        "links": tuple(
            SpanLink.model_construct(
                trace_id=_id(link.trace_id, 16, "links.trace_id"),
                span_id=_id(link.span_id, 8, "links.span_id"),
                attributes=attributes_of(link.attributes, "links.attributes"),
            )
            for link in span.links
        ),
        "resource": resource,
        **_times(span),
    }
    rollout_id = _given(attributes, resource, ROLLOUT_ID)
    attempt_id = _given(attributes, resource, ATTEMPT_ID)
    for name, value in ((ROLLOUT_ID, rollout_id), (ATTEMPT_ID, attempt_id)):
        if value is not None and not _ID.match(value):
            raise _Rejected(f"{name} {value[:60]!r} is not a valid id (letters, digits and ._:@-, at most 200)")
    # Built without validation: every field above is already of its type and within its bounds (hex ids of the
    # right length, ids matching ID_PATTERN, aware datetimes, JSON values), and validating the attributes again
    # (token id arrays of thousands of ints) would cost more than the whole decoding.
    if rollout_id is None or attempt_id is None:
        unattached = SpanUnattached.model_construct(
            event_id=new_event_id(), rollout_id=rollout_id, attempt_id=attempt_id, **fields, **envelope
        )
        _check_size(unattached, max_event_bytes)
        mapped.unattached.append(unattached)
        return
    sequence_id = _sequence_id(attributes, resource)
    event = SpanRecorded.model_construct(
        event_id=new_event_id(),
        rollout_id=rollout_id,
        attempt_id=attempt_id,
        sequence_id=BIGINT_MAX if sequence_id is None else sequence_id,
        **fields,
        **envelope,
    )
    _check_size(event, max_event_bytes)
    mapped.attached.append(Draft(event, numbered=sequence_id is not None))


def attributes_of(pairs: Iterable[KeyValue], where: str) -> dict[str, Json]:
    """OTLP key-value pairs as a JSON object (a repeated key: the last one wins).

    Raises:
        _Rejected: a key or text holds NUL, or a number is not finite (named by ``where`` and the key).
    """
    out: dict[str, Json] = {}
    for kv in pairs:
        try:
            out[_text(kv.key, "key")] = json_of(kv.value)
        except _Rejected as e:
            raise _Rejected(f"{where}.{_printable(kv.key)[:80]}: {e}") from None
    return out


def json_of(value: AnyValue) -> Json:  # noqa: PLR0911 - one return per AnyValue kind
    """An OTLP ``AnyValue`` as JSON: nested arrays and key-value lists, bytes as base64, empty as null.

    Raises:
        _Rejected: what PostgreSQL cannot store (NUL in text) or JSON cannot carry (NaN, infinities).
    """
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return _text(value.string_value, "value")
    if kind == "int_value":
        return value.int_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "double_value":
        number = value.double_value
        if not math.isfinite(number):
            raise _Rejected(f"{number} is not a JSON number (NaN and Infinity are refused)")
        return number
    if kind == "array_value":
        values = value.array_value.values
        # Token id arrays are long and all ints: one pass without a call per item.
        if all(v.WhichOneof("value") == "int_value" for v in values):
            return [v.int_value for v in values]
        return [json_of(v) for v in values]
    if kind == "kvlist_value":
        return attributes_of(value.kvlist_value.values, "kvlist")
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    return None


def _printable(key: str) -> str:
    # A key is echoed in the answer's message: a NUL in it is shown escaped.
    return key.replace("\x00", "\\u0000")


def _text(text: str, where: str) -> str:
    # Protobuf strings are valid UTF-8 (no lone surrogates can come through); NUL is the one PostgreSQL refuses.
    if "\x00" in text:
        raise _Rejected(f"{where}: NUL (\\u0000) is not allowed in text: PostgreSQL cannot store it")
    return text


def _id(raw: bytes, size: int, name: str) -> str:
    if len(raw) != size or not any(raw):
        raise _Rejected(f"{name} must be {size} bytes ({2 * size} hex digits), not all zero")
    return raw.hex()


def _parent_id(raw: bytes) -> str | None:
    # Empty (or all zero, as some SDKs write) means a root span.
    return None if not any(raw) else _id(raw, 8, "parent_span_id")


def _time(ns: int) -> datetime:
    # Integer arithmetic: a float of nanoseconds since 1970 has lost its microseconds already.
    return _EPOCH + timedelta(microseconds=ns // 1000)


def _times(span: Span) -> dict[str, datetime | None]:
    if span.start_time_unix_nano == 0:
        raise _Rejected("start_time_unix_nano is missing")
    if span.end_time_unix_nano and span.end_time_unix_nano < span.start_time_unix_nano:
        raise _Rejected("end_time_unix_nano is before start_time_unix_nano")
    end = _time(span.end_time_unix_nano) if span.end_time_unix_nano else None
    return {"start_time": _time(span.start_time_unix_nano), "end_time": end}


def _given(attributes: dict[str, Json], resource: dict[str, Json], name: str) -> str | None:
    value = attributes.get(name)
    if value is None:
        value = resource.get(name)
    return None if value is None else str(value)  # Agent Lightning takes any value as its text


def _sequence_id(attributes: dict[str, Json], resource: dict[str, Json]) -> int | None:
    value = attributes.get(SEQUENCE_ID)
    if value is None:
        value = resource.get(SEQUENCE_ID)
    if value is None or isinstance(value, bool):
        return None
    try:
        number = int(str(value))
    except ValueError:
        return None
    return number if 0 <= number <= BIGINT_MAX else None


def _check_size(event: SpanRecorded | SpanUnattached, max_event_bytes: int) -> None:
    size = len(encode_value(event))
    if size > max_event_bytes:
        raise _Rejected(f"the span is {size} bytes as an event; at most {max_event_bytes} fit in one record")
