"""Rows a projection wrote, kept in memory and trusted only while PostgreSQL still holds exactly that version.

A fold that loads the rows its batch touches, changes them and writes them back reads, in the next batch, much of
what it has just written: a rollout's enqueue and its attempts arrive a batch apart. Loading those rows again
(parsing every JSON and timestamp column) was a fifth of a rebuild's time.

Each row version in PostgreSQL carries ``xmin``, the id of the (sub)transaction that wrote it. An entry here holds
the values written together with that ``xmin``, and is used only when the row's current ``xmin`` is the same:
then PostgreSQL holds exactly what was written, committed (or written earlier in the caller's own transaction).
Any other writer (another instance, a dead-letter replay, a rolled-back batch, a frozen row) changes or hides that
``xmin``, and the row is loaded again. Entries are taken out while a batch works on them and put back only after
its rows are written, so a batch that fails leaves nothing half-changed behind. An entry older than 2**31
transaction ids is not trusted: by then a 32-bit ``xmin`` may have been reused.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

T = TypeVar("T")

#: xids after which an entry's 32-bit xmin is no longer trusted (half the xid space: PostgreSQL's own horizon)
_XID_HORIZON = 2**31


class WrittenRows(Generic[T]):
    """Values by (schema, key), each with the ``xmin`` of the row it was written as; the oldest go first."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[tuple[str, str], tuple[int, int, T]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def take(self, schema: str, keys: list[str], xmins: dict[str, int], xid_now: int) -> dict[str, T]:
        """Remove the entries of ``keys``; return the values whose row still has the xmin they were written as.

        ``xmins``: the current ``xmin`` of each key's row (a key without a row is not in it).
        ``xid_now``: the current 64-bit transaction id (``pg_current_xact_id()``).
        """
        out: dict[str, T] = {}
        for key in keys:
            entry = self._entries.pop((schema, key), None)
            if entry is None:
                continue
            written_xmin, written_at, value = entry
            if written_xmin == xmins.get(key) and xid_now - written_at < _XID_HORIZON:
                out[key] = value
        self.hits += len(out)
        self.misses += len(keys) - len(out)
        return out

    def put(self, schema: str, xmin: int, xid_now: int, values: dict[str, T]) -> None:
        """Remember ``values``, just written as rows whose ``xmin`` is ``xmin``."""
        for key, value in values.items():
            self._entries[(schema, key)] = (xmin, xid_now, value)
            self._entries.move_to_end((schema, key))
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()
