"""The unsafe-input guard's body scan, alone (the API's answers are in ``test_hostile_input.py``).

Integers: orjson encodes -2**63 to 2**64 - 1, so a body is looked at closer only when it holds twenty digits in a
row or a minus and nineteen. A positive nineteen-digit integer (a nanosecond timestamp, which span bodies carry)
is always in range and must not cost every such body a full parse.
"""

from __future__ import annotations

import json

import pytest

from producers.input_guard import INT_MAX, INT_MIN, body_errors

NANOS = 1_764_265_000_123_456_789  # 2025-11-27 in nanoseconds: nineteen digits


@pytest.mark.parametrize(
    ("value", "loc"),
    [(INT_MAX + 1, ("body", "input")), (INT_MIN - 1, ("body", "input")), (10**30, ("body", "input"))],
)
def test_an_integer_beyond_64_bits_is_named(value: int, loc: tuple[str, ...]) -> None:
    (error,) = body_errors(json.dumps({"input": value, "t": NANOS}).encode())
    assert (error["type"], tuple(error["loc"])) == ("int_range", loc)


@pytest.mark.parametrize("value", [INT_MAX, INT_MIN, NANOS, -NANOS, 0, -1])
def test_an_integer_orjson_encodes_passes(value: int) -> None:
    assert body_errors(json.dumps({"input": [value, str(value)]}).encode()) == []


def test_a_body_of_nanosecond_timestamps_is_not_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    parsed: list[bytes] = []
    loads = json.loads

    def counted_loads(body: bytes) -> object:
        parsed.append(body)
        return loads(body)

    monkeypatch.setattr(json, "loads", counted_loads)
    spans = [{"start_time": NANOS + i, "end_time": NANOS + i + 1, "id": f"span-{i}"} for i in range(50)]
    assert body_errors(json.dumps(spans).encode()) == []
    assert parsed == []
    # A run of twenty digits is a reason to look closer, even inside a string: looked at, and passed.
    assert body_errors(json.dumps({"id": "1" * 20}).encode()) == []
    assert len(parsed) == 1
