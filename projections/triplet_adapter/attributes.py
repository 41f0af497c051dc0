"""Reading flat, dotted OpenTelemetry attributes: unflattening families, token-id lists, first string of keys.

Every reader here tolerates any JSON value: a value of the wrong shape falls through to the next key, as Agent
Lightning's readers do, and never raises.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from schemas._base import Json


def first_string(attributes: Mapping[str, Json], keys: Iterable[str]) -> str | None:
    """The first key whose value is a string (a present non-string value is skipped, not an error)."""
    for key in keys:
        value = attributes.get(key)
        if isinstance(value, str):
            return value
    return None


_INTS_ONLY = {int}


def int_list(value: object) -> tuple[int, ...] | None:
    """A list or tuple made only of ints (bools are not token ids), else None."""
    # set(map(type, ...)) runs in C: token-id lists are long and read for every call of every rebuild.
    if isinstance(value, (list, tuple)) and (not value or set(map(type, value)) == _INTS_ONLY):
        return tuple(value)
    return None


def first_int_list(attributes: Mapping[str, object], keys: Iterable[str]) -> tuple[int, ...]:
    """The first key holding a valid int list; an invalid value falls through; none gives ``()``."""
    for key in keys:
        found = int_list(attributes.get(key))
        if found is not None:
            return found
    return ()


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any] | list[Any]:
    """Agent Lightning's ``unflatten_attributes``: dotted keys become nested dicts; a dict whose keys are exactly
    ``0..n-1`` becomes a list. A key that is both a leaf and a prefix keeps the later one (attribute order)."""
    root: dict[str, Any] = {}
    nested = False
    for flat_key, value in flat.items():
        if "." not in flat_key:
            root[flat_key] = value
            continue
        nested = True
        parts = flat_key.split(".")
        node = root
        for part in parts[:-1]:
            child = node.get(part)
            if child.__class__ is not dict:
                child = node[part] = {}
            node = child
        node[parts[-1]] = value
    return _lists(root) if nested else _as_list(root)


def _lists(node: dict[str, Any]) -> dict[str, Any] | list[Any]:
    for key, value in node.items():
        if value.__class__ is dict:
            node[key] = _lists(value)
    # Inlined _as_list: this runs for every nested dict of every call span.
    if "".join(node).isdecimal() and all(node):
        indices = sorted(map(int, node))
        if indices == list(range(len(indices))):
            return [node[str(i)] for i in indices]
    return node


def _as_list(node: dict[str, Any]) -> dict[str, Any] | list[Any]:
    """A dict keyed exactly ``"0".."n-1"`` as a list, else the dict."""
    # One C-level test instead of one per key (most dicts fail at the first character); all(node) rules out an
    # empty key hiding in the join.
    if node and "".join(node).isdecimal() and all(node):
        indices = sorted(map(int, node))
        if indices == list(range(len(indices))):
            return [node[str(i)] for i in indices]
    return node


def family(attributes: Mapping[str, Json], prefix: str) -> Json:
    """The attributes under ``prefix.`` unflattened, or None when there are none.

    When only the exact key ``prefix`` is present (some instrumentations write the whole family as one JSON
    string), its value is returned instead, parsed when it is a JSON array or object; Agent Lightning raises there.
    """
    dotted = prefix + "."
    cut = len(dotted)
    members = {key[cut:]: value for key, value in attributes.items() if key.startswith(dotted)}
    if members:
        result: Json = unflatten(members)
        return result
    whole = attributes.get(prefix)
    if isinstance(whole, str) and whole.lstrip()[:1] in ("[", "{"):
        return parse_json(whole, whole)
    return whole


#: The gen_ai families a call's payload reads (usage, system and the rest are not unflattened).
PAYLOAD_FAMILIES = ("gen_ai.request.", "gen_ai.response.", "gen_ai.prompt.", "gen_ai.completion.")


def gen_ai_tree(attributes: Mapping[str, Json]) -> dict[str, Json]:
    """The payload's ``gen_ai.*`` families unflattened at once (``{"prompt": [...], "request": {...}, ...}``): one
    pass over the attributes instead of one per family."""
    members = {key[7:]: value for key, value in attributes.items() if key.startswith(PAYLOAD_FAMILIES)}
    tree = unflatten(members) if members else {}
    return tree if isinstance(tree, dict) else {}


def first_family(attributes: Mapping[str, Json], prefixes: Iterable[str]) -> Json:
    """The first non-empty family among ``prefixes`` (Agent Lightning's ``_attributes_unflatten_multiple``)."""
    for prefix in prefixes:
        found = family(attributes, prefix)
        if found:
            return found
    return None


def parse_json(text: str, default: Json) -> Json:
    try:
        parsed: Json = json.loads(text)
    except ValueError:
        return default
    return parsed


def as_dict(value: Json) -> dict[str, Json]:
    """Metadata is a dict; a list (keys 0..n-1 at the top) keeps its indices as keys."""
    if isinstance(value, dict):
        return value
    if isinstance(value, list):
        return {str(i): item for i, item in enumerate(value)}
    return {}
