"""Time-aligned batches across partitions: oldest first, up to what every partition still fetching has reached."""

from __future__ import annotations

from typing import NamedTuple

from consumers.alignment import TimeAligned


class Rec(NamedTuple):
    tp: str
    offset: int
    timestamp: int


def buffer(**parts: list[int]) -> TimeAligned[str, Rec, int]:
    aligned: TimeAligned[str, Rec, int] = TimeAligned(lambda r: r.timestamp)
    for tp, stamps in parts.items():
        aligned.add(tp, [Rec(tp, i, ts) for i, ts in enumerate(stamps)], list(range(len(stamps))))
    return aligned


def taken(batch: tuple[list[Rec], list[int]] | None) -> list[tuple[str, int]]:
    assert batch is not None
    records, decoded = batch
    assert [r.offset for r in records] == decoded  # what was decoded travels with its record
    return sorted((r.tp, r.offset) for r in records)


def test_a_batch_stops_at_the_time_every_partition_still_fetching_has_reached():
    # "a" is a long way ahead of "b"; "b" has more on the broker, so a batch goes only as far as "b" has got.
    aligned = buffer(a=[10, 20, 30, 40, 50], b=[15, 25])
    assert taken(aligned.take(100, behind={"a", "b"})) == [("a", 0), ("a", 1), ("b", 0), ("b", 1)]
    # Nothing more on the broker for "b": the rest of "a" may go.
    assert taken(aligned.take(100, behind={"a"})) == [("a", 2), ("a", 3), ("a", 4)]


def test_a_partition_behind_with_nothing_buffered_holds_the_batch_until_forced():
    aligned = buffer(a=[10, 20])
    assert aligned.take(100, behind={"a", "b"}) is None
    assert taken(aligned.take(100, behind={"a", "b"}, force=True)) == [("a", 0), ("a", 1)]


def test_the_limit_keeps_the_oldest_records_and_partition_order():
    aligned = buffer(a=[1, 2, 3, 7, 8], b=[4, 5, 6, 9])
    assert taken(aligned.take(4, behind=set())) == [("a", 0), ("a", 1), ("a", 2), ("b", 0)]
    assert taken(aligned.take(4, behind=set())) == [("a", 3), ("a", 4), ("b", 1), ("b", 2)]  # 5 to 8, not 9
    assert taken(aligned.take(4, behind=set())) == [("b", 3)]


def test_timestamps_going_back_within_a_partition_keep_its_order():
    # Several producers: "a"'s clock goes back at offset 1. Its progress is the running maximum (50, 50, 60).
    aligned = buffer(a=[50, 5, 60], b=[40, 55])
    assert taken(aligned.take(100, behind={"b"})) == [("a", 0), ("a", 1), ("b", 0), ("b", 1)]
    assert aligned.size("a") == 1


def test_dropping_a_partition_returns_its_first_record_for_the_rewind():
    aligned = buffer(a=[10, 20], b=[15])
    assert aligned.drop("a") == Rec("a", 0, 10)
    assert aligned.drop("a") is None
    assert aligned.partitions() == ["b"]
