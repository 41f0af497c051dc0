"""Cyclic garbage collection paused while batches are processed, with a full collection now and then.

A batch keeps some 20 objects per record alive until it commits (records, events, envelopes, rows): with the
default thresholds CPython runs a collection every 700 allocations, and the full collections triggered as those
objects pile up scan the whole heap again and again. Measured on the rollouts rebuild, that was a quarter of the
run time. The objects of a batch are freed by reference counting when it ends; the rare cycles among them wait
for the next collection.

A worker that prefetches keeps the pause across batches: with the collector back on between two batches, the
next batch, already decoded, would be scanned at once (measured: 20 ms per batch). ``Collections`` then collects
between batches every few seconds, so cycles are still freed and memory stays bounded.
"""

from __future__ import annotations

import contextlib
import gc
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator


class _Pauses:
    #: nesting depth: several workers may share one event loop, each pausing around its own batches
    depth = 0
    #: whether the outermost pause disabled the collector (it leaves it off if someone else turned it off)
    disabled = False


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Disable cyclic GC for the block; nested or concurrent blocks (one event loop) restore it once, at the end."""
    if _Pauses.depth == 0:
        _Pauses.disabled = gc.isenabled()
        gc.disable()
    _Pauses.depth += 1
    try:
        yield
    finally:
        _Pauses.depth -= 1
        if _Pauses.depth == 0 and _Pauses.disabled:
            gc.enable()


class Collections:
    """Collections between batches inside a long pause: the young generations now and then, the heap rarely.

    A young collection scans what was allocated since the previous one and is still alive, mostly the records
    buffered for the next batches (measured: 0.1 to 0.2 s for 40,000 records), so it runs every ten seconds; a
    full collection, whose cost grows with the whole heap, frees the rare cycles that reached the oldest
    generation, every five minutes.
    """

    def __init__(self, every_s: float = 10.0, full_every: int = 30) -> None:
        self.every_s = every_s
        self.full_every = full_every
        self.rounds = 0
        self._last = time.monotonic()

    def between_batches(self) -> None:
        if time.monotonic() - self._last < self.every_s:
            return
        self.rounds += 1
        gc.collect(2 if self.rounds % self.full_every == 0 else 1)
        self._last = time.monotonic()
