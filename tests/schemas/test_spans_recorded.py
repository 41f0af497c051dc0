"""``spans.recorded``: one event for an attempt's spans, read as the ``span.recorded`` events it stands for.

Its members are valid ``span.recorded`` events (what validating them from scratch gives), carry its envelope and
ids of their own that every decoding of the record derives alike; the projection engine hands a projection that
reads ``span.recorded`` those members, one envelope each at the record's position, and a projection that reads
``spans.recorded`` itself (or everything) the event as it is. The publisher's side splits a batch too large for
one record.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from consumers.batch import decode_records
from producers.errors import EventTooLarge
from producers.models import SpanIn
from producers.publisher import EventPublisher, PublisherConfig
from producers.span_batches import spans_event, spans_records
from projections.base import Projection
from schemas import RewardAssigned, SpanRecorded, SpansRecorded, decode, encode
from schemas.topics import SPANS
from tests.fixtures.events import make_span, make_spans

_ENVELOPE = {"event_id", "type", "version", "occurred_at", "correlation_id", "causation_id", "source"}


async def _apply(envelopes, conn) -> None:  # never called: only decode_records runs here
    raise AssertionError


def _record(event: SpansRecorded, offset: int = 7) -> SimpleNamespace:
    value, headers = encode(event)
    return SimpleNamespace(
        topic="agl.spans.v1", partition=2, offset=offset, timestamp=1, key=event.key(), value=value, headers=headers
    )


def test_members_are_the_span_recorded_events_validated_from_scratch():
    batch = make_spans(3, correlation_id="req-1", causation_id="cause-1", source="/tests")
    members = batch.members()
    assert [m.sequence_id for m in members] == [1, 2, 3]
    for member, span in zip(members, batch.spans, strict=True):
        assert type(member) is SpanRecorded
        # What validation gives for the same fields: nothing is left out, defaulted or mistyped.
        assert SpanRecorded.model_validate(member.model_dump()) == member
        assert member.model_dump(include=set(span.model_dump())) == span.model_dump()
        assert (member.rollout_id, member.attempt_id) == (batch.rollout_id, batch.attempt_id)
        assert (member.occurred_at, member.correlation_id, member.causation_id, member.source) == (
            batch.occurred_at, "req-1", "cause-1", "/tests",
        )  # fmt: skip
        # A member round-trips as a span.recorded record of its own.
        assert decode(*encode(member)) == member
    ids = [m.event_id for m in members]
    assert len(set(ids)) == 3 and batch.event_id not in ids
    # Derived, not drawn: the record decoded again (a consumer restarting, a rebuild) gives the same ids.
    assert [m.event_id for m in decode(*encode(batch)).members()] == ids
    assert [m.event_id for m in make_spans(3).members()] != ids


def test_a_projection_reading_span_recorded_receives_the_members_at_the_records_position():
    batch = make_spans(3)
    spans = Projection(name="p_spans", version=1, topics=(SPANS,), apply=_apply, event_types=frozenset({SpanRecorded}))
    (decoded,) = decode_records(spans, [_record(batch)])
    assert [e.event for e in decoded.envelopes] == list(batch.members())
    assert {(e.topic, e.partition, e.offset) for e in decoded.envelopes} == {("agl.spans.v1", 2, 7)}
    # One that reads spans.recorded itself, or every event, receives the event as it is.
    whole = Projection(name="p_whole", version=1, topics=(SPANS,), apply=_apply, event_types=frozenset({SpansRecorded}))
    everything = Projection(name="p_all", version=1, topics=(SPANS,), apply=_apply)
    for projection in (whole, everything):
        (decoded,) = decode_records(projection, [_record(batch)])
        assert [e.event for e in decoded.envelopes] == [batch]
    # One that reads neither skips it unparsed.
    rewards = Projection(
        name="p_rewards", version=1, topics=(SPANS,), apply=_apply, event_types=frozenset({RewardAssigned})
    )
    (decoded,) = decode_records(rewards, [_record(batch)])
    assert decoded.unread and decoded.envelopes == () and decoded.result is None


def test_a_reports_spans_make_the_event_validation_would_make():
    spans = [SpanIn(**make_span(span_id=f"{i:016x}").model_dump(exclude=_ENVELOPE | {"sequence_id"})) for i in range(3)]
    event = spans_event("ro-1", "at-1", spans, [7, 8, 9], {"correlation_id": "req-1"})
    assert SpansRecorded.model_validate(event.model_dump()) == event
    assert [(s.span_id, s.sequence_id) for s in event.spans] == [(f"{i:016x}", 7 + i) for i in range(3)]
    assert event.correlation_id == "req-1" and decode(*encode(event)) == event


def test_a_batch_too_large_for_one_record_is_split_in_order():
    publisher = EventPublisher("unused:9092", config=PublisherConfig(max_request_size=16 * 1024))
    batch = make_spans(40)
    records = spans_records(publisher, batch)
    assert len(records) > 1
    parts = [decode(value, headers) for _, _, value, headers in records]
    assert all(len(value) <= 15 * 1024 for _, _, value, _ in records)
    assert [s for p in parts for s in p.spans] == list(batch.spans)  # type: ignore[attr-defined]
    assert parts[0].event_id == batch.event_id and len({p.event_id for p in parts}) == len(parts)
    # Small enough: one record, the event itself.
    ((_, key, value, _),) = spans_records(publisher, make_spans(2, rollout_id="ro-2"))
    assert key == b"ro-2" and decode(value).type == "spans.recorded"
    # A single span too large fails as its span.recorded would.
    huge = make_spans(1)
    huge = huge.model_copy(update={"spans": (huge.spans[0].model_copy(update={"attributes": {"text": "x" * 20_000}}),)})
    with pytest.raises(EventTooLarge):
        spans_records(publisher, huge)
