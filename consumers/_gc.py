"""Cyclic garbage collection paused while a batch is processed.

A batch keeps some 20 objects per record alive until it commits (records, events, envelopes, rows): with the
default thresholds CPython runs a collection every 700 allocations, and the full collections triggered as those
objects pile up scan the whole heap again and again. Measured on the rollouts rebuild, that was a quarter of the
run time. The objects of a batch are freed by reference counting when it ends; the rare cycles among them wait
for the next collection after the pause, so memory stays bounded by one batch.
"""

from __future__ import annotations

import contextlib
import gc
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
