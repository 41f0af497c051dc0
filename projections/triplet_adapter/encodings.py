"""Reading a reward from a span, in every encoding users have in their traces.

Checked in Agent Lightning v0.3's order (``emitter/reward.py::get_reward_value``):

1. v0.3 annotation: attributes ``agentlightning.reward.{i}.name`` / ``.value`` on any span (``agl.emit_reward``
   writes them on ``agentlightning.annotation``); element 0 is the primary reward, the others further dimensions.
2. AgentOps: ``agentops.task.output`` then ``agentops.entity.output``, a dict or its JSON string,
   ``{"type": "reward", "value": x}``. A value of None is no reward.
3. Legacy: a span named ``agentlightning.annotation`` **or** ``agentlightning.reward`` (v0.2's name, which v0.3
   silently ignores) with an attribute ``reward``.

A value that is not a finite number (numeric strings are read, as pydantic's lax float does; booleans are not) is
a reading with ``error`` set and no value: the caller records it, nothing raises (v0.3 crashes the adapter there).
Links (``agentlightning.link.{i}.key_match`` / ``.value_match``) are read from the same span.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from projections.triplet_adapter.attributes import family, parse_json
from schemas._base import Json

ANNOTATION = "agentlightning.annotation"
LEGACY_REWARD = "agentlightning.reward"
OPERATION = "agentlightning.operation"
OPERATION_NAME = "agentlightning.operation.name"
REWARD_PREFIX = "agentlightning.reward"
LINK_PREFIX = "agentlightning.link"
_ANNOTATION_MARK = "\n" + REWARD_PREFIX + "."
_LINK_MARK = "\n" + LINK_PREFIX + "."
AGENTOPS_OUTPUTS = ("agentops.task.output", "agentops.entity.output")
#: The dimension name of rewards whose encoding names none.
UNNAMED = "reward"


@dataclass(frozen=True, slots=True)
class Reading:
    """A reward span's content: a value with its named dimensions (primary included), or an error."""

    value: float | None
    dimensions: dict[str, float]
    error: str | None
    links: tuple[tuple[str, str], ...] = ()


def number(value: Json) -> float | None:
    """A finite float, or None when the value is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        result = float(value)
    elif isinstance(value, str):
        try:
            result = float(value)
        except ValueError:
            return None
    else:
        return None
    return result if math.isfinite(result) else None


def _malformed(what: str, value: Json) -> Reading:
    shown = repr(value)
    if len(shown) > 200:
        shown = shown[:197] + "..."
    return Reading(None, {}, f"malformed reward: {what} {shown}")


def read_reward(name: str, attributes: Mapping[str, Json]) -> Reading | None:
    """The reward a span carries, or None when it carries none."""
    # Every span of every rebuild passes here: one C-level search of the joined keys finds the prefixes.
    keys = "\n" + "\n".join(attributes)
    reading = (
        (_annotation(attributes) if _ANNOTATION_MARK in keys else None)
        or _agentops(attributes)
        or _legacy(name, attributes)
    )
    if reading is None:
        return None
    links = read_links(attributes) if _LINK_MARK in keys else ()
    return Reading(reading.value, reading.dimensions, reading.error, links) if links else reading


def _annotation(attributes: Mapping[str, Json]) -> Reading:
    entries = family(attributes, REWARD_PREFIX)
    if not isinstance(entries, list):
        return _malformed("agentlightning.reward.* is not a list of {name, value}:", entries)
    dimensions: dict[str, float] = {}
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            return _malformed("agentlightning.reward entry without a name:", entry)
        value = number(entry.get("value"))
        if value is None:
            return _malformed(f"value of {entry['name']!r} is not a finite number:", entry.get("value"))
        dimensions[str(entry["name"])] = value
    primary = entries[0]
    assert isinstance(primary, dict)
    return Reading(dimensions[str(primary["name"])], dimensions, None)


def _agentops(attributes: Mapping[str, Json]) -> Reading | None:
    for key in AGENTOPS_OUTPUTS:
        output = attributes.get(key)
        if isinstance(output, str):
            output = parse_json(output, None)
        if not isinstance(output, dict) or output.get("type") != "reward" or output.get("value") is None:
            continue
        value = number(output["value"])
        if value is None:
            return _malformed(f"{key} value is not a finite number:", output["value"])
        return Reading(value, {UNNAMED: value}, None)
    return None


def _legacy(name: str, attributes: Mapping[str, Json]) -> Reading | None:
    if name not in (ANNOTATION, LEGACY_REWARD) or attributes.get("reward") is None:
        return None
    value = number(attributes["reward"])
    if value is None:
        return _malformed("reward attribute is not a finite number:", attributes["reward"])
    return Reading(value, {UNNAMED: value}, None)


def read_links(attributes: Mapping[str, Json]) -> tuple[tuple[str, str], ...]:
    """``(key_match, value_match)`` pairs; malformed entries are ignored."""
    if not any(key.startswith(LINK_PREFIX + ".") for key in attributes):
        return ()
    entries = family(attributes, LINK_PREFIX)
    if not isinstance(entries, list):
        return ()
    links: list[tuple[str, str]] = []
    for entry in entries:
        if isinstance(entry, dict):
            key, value = entry.get("key_match"), entry.get("value_match")
            if isinstance(key, str) and isinstance(value, str):
                links.append((key, value))
    return tuple(links)


def is_reward_operation(name: str, attributes: Mapping[str, Json]) -> bool:
    """An ``agentlightning.operation`` named ``agentlightning.reward``: it excludes LLM-judge calls beneath it but
    is not itself a reward unless it carries a value (Agent Lightning v0.3)."""
    return name == OPERATION and attributes.get(OPERATION_NAME) == LEGACY_REWARD
