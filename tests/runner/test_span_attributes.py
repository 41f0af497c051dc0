"""Nested values as flat span attributes: the shapes the triplet adapter reads back, and no garbage left behind."""

from __future__ import annotations

import gc

from agl.span_attributes import flat_attributes, flatten
from projections.triplet_adapter.attributes import unflatten

NESTED = {"a": {"b": 1, "c": [{"d": 2}, {"e": [1, 2]}]}, "tags": ["x", "y"], "mixed": [1, "one"], "none": None}


def test_nested_values_flatten_to_dotted_keys_and_read_back_the_same():
    flat = flatten(NESTED)
    assert flat == {
        "a.b": 1,
        "a.c.0.d": 2,
        "a.c.1.e": [1, 2],  # a list of one primitive type stays one attribute
        "tags": ["x", "y"],
        "mixed.0": 1,  # a mixed list is keyed by index
        "mixed.1": "one",
        "none": None,
    }
    assert unflatten(flat) == NESTED
    assert flatten({"k": [1, 2]}, "p", expand_leaf_lists=True) == {"p.k.0": 1, "p.k.1": 2}
    assert flat_attributes(NESTED)["none"] == "null"  # what an attribute cannot hold becomes its JSON text


def test_flattening_leaves_no_reference_cycle_for_the_collector():
    # A runner flattens several values per attempt: garbage that only the cyclic collector frees made its
    # collections scan thousands of objects each.
    enabled = gc.isenabled()
    gc.disable()
    try:
        gc.collect()
        for _ in range(100):
            flatten(NESTED)
        assert gc.collect() == 0
    finally:
        if enabled:
            gc.enable()
