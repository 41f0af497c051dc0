"""The model file the embedded LLM serves: the wheel's SmolLM2 re-encoded as Q8_0, once, into a cache.

Every test that talks to the embedded LLM runs on the re-encoded file (``EmbeddedLLM`` serves it); these tests check
the file against its source.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf.quants import dequantize

from agl.stack.llm_model import ABANDONED_AFTER_S, MOSTLY_Q8_0, TEMPORARY_PREFIX, served_model_path, source_model_path

KILLED = f"{TEMPORARY_PREFIX}killed.gguf"
UNDER_WAY = f"{TEMPORARY_PREFIX}under-way.gguf"


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache holding what two other conversions left: one killed with -9 long ago, one still under way."""
    cache = tmp_path_factory.mktemp("llm-cache")
    (cache / "models").mkdir()
    killed, under_way = cache / "models" / KILLED, cache / "models" / UNDER_WAY
    killed.write_bytes(b"half a model")
    under_way.write_bytes(b"a model being written")
    long_ago = time.time() - ABANDONED_AFTER_S - 60
    os.utime(killed, (long_ago, long_ago))
    return cache


def test_the_q4_1_weights_become_q8_0_and_nothing_else_changes(cache: Path):
    served = served_model_path(cache)
    assert served.parent == cache / "models" and ".Q8_0." in served.name
    source, target = gguf.GGUFReader(source_model_path()), gguf.GGUFReader(served)

    assert [t.name for t in target.tensors] == [t.name for t in source.tensors]
    by_name = {t.name: t for t in target.tensors}
    re_encoded = 0
    for before in source.tensors:
        after = by_name[before.name]
        assert list(after.shape) == list(before.shape)
        if before.tensor_type == gguf.GGMLQuantizationType.Q4_1:
            re_encoded += 1
            assert after.tensor_type == gguf.GGMLQuantizationType.Q8_0
            old = dequantize(before.data, before.tensor_type).reshape(-1, 32)
            new = dequantize(after.data, after.tensor_type).reshape(-1, 32)
            # Q8_0: each weight within half a step (1/127 of its block's largest) of the Q4_1 one, plus the
            # rounding of the block's scale to 16 bits (up to 127 steps x 2^-11): at most 1/200 of the largest.
            bound = np.abs(old).max(axis=1, keepdims=True) / 200
            assert (np.abs(new - old) <= bound).all(), before.name
        else:
            assert after.tensor_type == before.tensor_type
            assert np.array_equal(np.asarray(after.data), np.asarray(before.data)), before.name
    assert re_encoded == 210  # every block of SmolLM2's 30 layers

    fields = {n: f.contents() for n, f in target.fields.items() if not n.startswith("GGUF.")}
    expected = {n: f.contents() for n, f in source.fields.items() if not n.startswith("GGUF.")}
    assert fields.pop("general.file_type") == MOSTLY_Q8_0
    expected.pop("general.file_type")
    assert fields == expected  # the tokenizer, the chat template and the rest, as they were


def test_the_file_is_made_once_and_no_half_file_is_left(cache: Path):
    first = served_model_path(cache)
    made = first.stat().st_mtime_ns
    assert served_model_path(cache) == first and first.stat().st_mtime_ns == made
    # Its own temporary name is gone, so is the killed conversion's; the one under way is not touched.
    assert sorted(p.name for p in first.parent.iterdir()) == sorted([first.name, UNDER_WAY])
