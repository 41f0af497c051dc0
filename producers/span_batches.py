"""An attempt's spans as ``spans.recorded`` events: one record for the spans a report carries, where
``span.recorded`` takes one per span.

Each record costs the whole path the same whatever it holds (an outbox row written, read and marked, a Kafka
record, a decoding in every projection that reads it), so a finish report's spans travel together. A batch
whose record would pass the publisher's size limit is split in halves until every part fits (a single span too
large fails as a ``span.recorded`` would).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from producers.errors import EventTooLarge
from schemas import RecordedSpan, SpansRecorded
from schemas._base import new_event_id, trusted

if TYPE_CHECKING:
    from collections.abc import Sequence

    from producers.models import SpanIn
    from producers.publisher import EventPublisher, Record

#: A ``RecordedSpan``'s fields, in declaration order: a ``SpanIn``'s less its rollout and attempt ids.
_FIELDS = tuple(RecordedSpan.model_fields)


def spans_event(
    rollout_id: str, attempt_id: str, spans: Sequence[SpanIn], sequence_ids: Sequence[int], envelope: dict[str, Any]
) -> SpansRecorded:
    """One event for ``spans`` (all of ``attempt_id``, numbered ``sequence_ids``; a report carries at most
    ``MAX_REPORT_SPANS``, fewer than an event holds)."""
    # Validated as SpanIn, under the same constraints: not validated again.
    recorded = tuple(
        trusted(RecordedSpan, {name: seq if name == "sequence_id" else span.__dict__[name] for name in _FIELDS})
        for span, seq in zip(spans, sequence_ids, strict=True)
    )
    return SpansRecorded(rollout_id=rollout_id, attempt_id=attempt_id, spans=recorded, **envelope)


def spans_records(publisher: EventPublisher, event: SpansRecorded) -> list[Record]:
    """The records of ``event``: one, or more when one would be too large (each part has an id of its own).

    Raises:
        EventTooLarge: a single span is too large to publish.
    """
    try:
        return [publisher.record_of(event)]
    except EventTooLarge:
        if len(event.spans) == 1:
            raise
        return _halves(publisher, event)


def _halves(publisher: EventPublisher, event: SpansRecorded) -> list[Record]:
    middle = len(event.spans) // 2
    first = event.model_copy(update={"spans": event.spans[:middle]})
    second = event.model_copy(update={"spans": event.spans[middle:], "event_id": new_event_id()})
    return [*spans_records(publisher, first), *spans_records(publisher, second)]
