"""The batch-scoped GC pause: nested and interleaved pauses restore the collector once, and only if it was on."""

from __future__ import annotations

import gc

from consumers._gc import gc_paused


def test_interleaved_pauses_restore_the_collector_when_the_last_one_ends():
    assert gc.isenabled()
    a, b = gc_paused(), gc_paused()
    a.__enter__()
    b.__enter__()
    assert not gc.isenabled()
    a.__exit__(None, None, None)  # two workers on one loop: the first batch ends while the second runs
    assert not gc.isenabled()
    b.__exit__(None, None, None)
    assert gc.isenabled()


def test_a_collector_someone_else_disabled_stays_disabled():
    gc.disable()
    try:
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()
