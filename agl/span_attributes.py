"""Nested values as flat OpenTelemetry attributes, the way Agent Lightning's emitters flatten them.

``{"a": {"b": 1, "c": [{"d": 2}]}}`` becomes ``{"a.b": 1, "a.c.0.d": 2}``. A list of primitives of one type
stays one list-valued attribute (unless ``expand_leaf_lists``), as OTel allows; anything else an attribute
cannot hold (None, mixed lists, objects) becomes its JSON text, with ``str()`` for what JSON cannot encode.
Readers (the triplet adapter) unflatten by the same rules, so the encodings must agree exactly.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

#: What an OTel attribute may hold.
AttributeValue = str | bool | int | float | list[str] | list[bool] | list[int] | list[float]


def flatten(nested: Any, prefix: str = "", *, expand_leaf_lists: bool = False) -> dict[str, Any]:
    """Dotted keys for the leaves of nested dicts and lists (list items keyed by their index)."""
    flat: dict[str, Any] = {}
    _walk(nested, prefix, flat, expand_leaf_lists)
    return flat


def _walk(value: Any, key: str, flat: dict[str, Any], expand_leaf_lists: bool) -> None:
    # A module function, not a closure calling itself: that closure was a reference cycle (function <-> cell) per
    # call, garbage only the cyclic collector frees; a runner flattens several values per attempt.
    if isinstance(value, Mapping):
        for k, v in value.items():
            _walk(v, f"{key}.{k}" if key else str(k), flat, expand_leaf_lists)
        return
    if isinstance(value, (list, tuple)):
        leaf = bool(value) and all(isinstance(item, (str, int, float, bool)) for item in value)
        if leaf and key and not expand_leaf_lists and len({_primitive(item) for item in value}) == 1:
            flat[key] = list(value)
            return
        for i, item in enumerate(value):
            _walk(item, f"{key}.{i}" if key else str(i), flat, expand_leaf_lists)
        return
    flat[key] = value


def _primitive(value: Any) -> type:
    for kind in (bool, int, float):
        if isinstance(value, kind):
            return kind
    return str


def sanitize_value(value: Any) -> AttributeValue:
    """``value`` as an OTel attribute value: primitives as they are, one-type lists as lists, else JSON text."""
    if isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (list, tuple)) and value:
        kinds = {_primitive(item) for item in value if isinstance(item, (str, bool, int, float))}
        if len(kinds) == 1 and all(isinstance(item, (str, bool, int, float)) for item in value):
            return list(value)
    return json.dumps(value, default=str)


def sanitize(attributes: Mapping[str, Any]) -> dict[str, AttributeValue]:
    return {key: sanitize_value(value) for key, value in attributes.items()}


def flat_attributes(nested: Any, prefix: str = "", *, expand_leaf_lists: bool = False) -> dict[str, AttributeValue]:
    """:func:`flatten` then :func:`sanitize`: ready for ``span.set_attributes``."""
    return sanitize(flatten(nested, prefix, expand_leaf_lists=expand_leaf_lists))
