"""Process-wide Prometheus counters of the publishing side (the API serves them on ``/metrics``).

They live in a registry of their own, not the client's global one: several apps built in one process (the tests)
each add their per-app registry beside this one, and nothing is registered twice.
"""

from __future__ import annotations

from collections import Counter as Tally
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter

if TYPE_CHECKING:
    from collections.abc import Iterable

    from producers.handover import Record

PROCESS_REGISTRY = CollectorRegistry(auto_describe=True)

EVENTS_PUBLISHED = Counter(
    "agl_events_published",
    "Events this process published to Kafka (acknowledged by the broker), by event type",
    ["type"],
    registry=PROCESS_REGISTRY,
)


def count_published(types: Iterable[str]) -> None:
    """Count acknowledged events; one increment per type, not per event, keeps large batches cheap."""
    for event_type, count in Tally(types).items():
        EVENTS_PUBLISHED.labels(type=event_type).inc(count)


def record_type(record: Record) -> str:
    """The CloudEvents type header of an encoded record (``unknown`` for records of other writers)."""
    for name, value in record[3]:
        if name == "ce_type":
            return value.decode(errors="replace")
    return "unknown"
