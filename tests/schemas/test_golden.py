"""Golden records: every published (type, version) decodes into the current model through the upcasters.

A file is written once, when its version is published, and never edited. A current-version file must also
re-encode to the same JSON: a change to a published version's fields fails here and needs a new version.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from schemas import EVENT_TYPES, decode, encode
from schemas.catalog import current_version, event_type

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
FILES = sorted(GOLDEN.glob("*.json"))


def _load(path: Path) -> tuple[bytes, list[tuple[str, bytes]], dict[str, Any]]:
    doc = json.loads(path.read_text())
    value = json.dumps(doc["value"]).encode()
    headers = [(k, v.encode()) for k, v in doc["headers"].items()]
    return value, headers, doc["value"]


def test_every_type_and_version_has_a_golden_file():
    expected = {f"{event_type(cls)}.v{v}.json" for cls in EVENT_TYPES for v in range(1, current_version(cls) + 1)}
    assert expected <= {p.name for p in FILES}, f"missing golden files: {sorted(expected - {p.name for p in FILES})}"


def test_no_golden_file_names_an_unknown_type_or_version():
    known = {f"{event_type(cls)}.v{v}.json" for cls in EVENT_TYPES for v in range(1, current_version(cls) + 1)}
    assert {p.name for p in FILES} <= known


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_golden_record_decodes_into_the_current_model(path: Path):
    value, headers, raw = _load(path)
    event = decode(value, headers)
    assert event.type == raw["type"]
    assert event.version == current_version(type(event))
    assert str(event.event_id) == raw["event_id"]
    assert event.occurred_at.tzinfo is not None
    if raw["version"] == event.version:
        assert json.loads(encode(event)[0]) == raw, "a published version changed shape: add a new version instead"
