"""Batches in time order across partitions, so a catch-up meets an entity's events together.

The consumer hands out records partition by partition, in chunks of up to ``max_partition_fetch_bytes``.
Catching up from offset 0 (a rebuild, an attached projection, a worker back from downtime), one partition can
then run many thousands of records ahead of another. A fold that joins topics (a rollout's enqueue on one topic,
its attempts on another) meets each entity in several batches, far apart, and reads and writes its rows each
time. Handed out oldest first across partitions, a rollout's events mostly share one batch.

Order between partitions never matters for correctness (projections must not assume one); this only changes
which records share a batch. Within a partition the order is kept. Record timestamps may go back within a
partition (several producers), so a partition's progress is the running maximum of its timestamps.

A batch takes records up to the *horizon*: the time every partition still fetching from the broker has
reached. A partition that has more records on the broker but none here holds the batch back (its time is
unknown) until the caller forces a batch, which it does after a few fetches, so a slow partition delays but
never stops the others. At the head of the log no partition is behind and everything buffered goes at once.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

K = TypeVar("K")  # a partition
R = TypeVar("R")  # a record
D = TypeVar("D")  # what was decoded of it


@dataclass
class _Buffered(Generic[R, D]):
    records: list[R] = field(default_factory=list)
    decoded: list[D] = field(default_factory=list)
    #: running maximum of the records' timestamps: how far in time this partition has got
    reach: list[int] = field(default_factory=list)


class TimeAligned(Generic[K, R, D]):
    """Per-partition buffers of fetched records, handed out in batches oldest first."""

    def __init__(self, timestamp: Callable[[R], int]) -> None:
        self._timestamp = timestamp
        self._parts: dict[K, _Buffered[R, D]] = {}

    def add(self, tp: K, records: Sequence[R], decoded: Sequence[D]) -> None:
        if not records:
            return
        part = self._parts.setdefault(tp, _Buffered())
        start = part.reach[-1] if part.reach else -(2**63)
        part.records += records
        part.decoded += decoded
        part.reach += list(itertools.accumulate(map(self._timestamp, records), max, initial=start))[1:]

    def drop(self, tp: K) -> R | None:
        """Forget ``tp``'s buffered records (its position was moved); return the first of them, if any."""
        part = self._parts.pop(tp, None)
        return part.records[0] if part is not None and part.records else None

    def size(self, tp: K) -> int:
        part = self._parts.get(tp)
        return len(part.records) if part is not None else 0

    def partitions(self) -> list[K]:
        return [tp for tp, part in self._parts.items() if part.records]

    def earliest(self, among: set[K]) -> list[K]:
        """The partitions of ``among`` that limit the horizon: those with nothing buffered, else the earliest."""
        empty = [tp for tp in among if tp not in self._parts or not self._parts[tp].records]
        if empty:
            return empty
        return [min(among, key=lambda tp: self._parts[tp].reach[-1])]

    def take(self, limit: int, behind: set[K], *, force: bool = False) -> tuple[list[R], list[D]] | None:
        """Up to ``limit`` records, oldest first, none later than the horizon; ``None`` = wait for a fetch.

        ``behind``: partitions with records on the broker that are not buffered yet.
        """
        parts = {tp: part for tp, part in self._parts.items() if part.records}
        if not parts:
            return None
        if not force and any(tp not in parts for tp in behind):
            return None
        limits = [part.reach[-1] for tp, part in parts.items() if tp in behind]
        horizon = min(limits) if limits else max(part.reach[-1] for part in parts.values())
        counts = self._counts(parts, horizon)
        if sum(counts.values()) > limit:
            counts = self._counts(parts, self._lower(parts, horizon, limit))
        records: list[R] = []
        decoded: list[D] = []
        for tp, part in parts.items():
            n = min(counts[tp], limit - len(records))
            if n <= 0:
                continue
            records += part.records[:n]
            decoded += part.decoded[:n]
            del part.records[:n], part.decoded[:n], part.reach[:n]
        if not records:  # every head is later than the horizon: hand out the oldest head anyway
            tp = min(parts, key=lambda k: parts[k].reach[0])
            part = parts[tp]
            records, decoded = part.records[:1], part.decoded[:1]
            del part.records[:1], part.decoded[:1], part.reach[:1]
        return records, decoded

    @staticmethod
    def _counts(parts: dict[K, _Buffered[R, D]], horizon: int) -> dict[K, int]:
        return {tp: bisect.bisect_right(part.reach, horizon) for tp, part in parts.items()}

    def _lower(self, parts: dict[K, _Buffered[R, D]], horizon: int, limit: int) -> int:
        """The latest horizon at or below ``horizon`` that lets at most ``limit`` records through."""
        low = min(part.reach[0] for part in parts.values())
        high = horizon
        while low < high:
            middle = (low + high + 1) // 2
            if sum(self._counts(parts, middle).values()) <= limit:
                low = middle
            else:
                high = middle - 1
        return low
