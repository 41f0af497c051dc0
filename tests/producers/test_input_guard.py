"""The unsafe-input guard's body scan, alone (the API's answers are in ``test_hostile_input.py``).

Integers: orjson encodes -2**63 to 2**64 - 1, so a body is looked at closer only when it holds twenty digits in a
row or a minus and nineteen, where a number may start (not inside a hex id). A positive nineteen-digit integer (a
nanosecond timestamp, which span bodies carry) is always in range and must not cost every such body a full parse.
"""

from __future__ import annotations

import json

import pytest

from producers.input_guard import INT_MAX, INT_MIN, MAX_NESTING, body_errors, too_deep

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
    # A run of twenty digits after a separator is a reason to look closer, even inside a string: looked at, and
    # passed. Inside a hex id (after a letter or a quote) it is not.
    assert body_errors(json.dumps({"id": "a: " + "1" * 20}).encode()) == []
    assert len(parsed) == 1
    for text in ("1" * 20, "ab" + "1" * 25 + "cd", "a-" + "9" * 19, "1." + "2" * 30):
        assert body_errors(json.dumps({"id": text, "f": float(f"1.{'2' * 30}")}).encode()) == []
    assert len(parsed) == 1


@pytest.mark.parametrize(
    "body",
    [b"123456789012345678901", b"-12345678901234567890", b'{"a":123456789012345678901}', b"[1, -9999999999999999999]",
     b'{"a":\n 10000000000000000000000}', b'{"id":"ab11111111111111111111","n":[0,\t123456789012345678901]}'],
)  # fmt: skip
def test_an_integer_after_a_separator_or_alone_is_found(body: bytes) -> None:
    (error,) = body_errors(body)
    assert error["type"] == "int_range"


def _depth(levels: int, *, text: str = "") -> bytes:
    """A body ``levels`` deep, alternating objects and arrays, each holding ``text`` beside the next level."""
    value: object = 1
    for i in range(levels - 1):
        value = {"t": text, "next": value} if i % 2 else [text, value]
    return json.dumps({"t": text, "next": value}).encode()


@pytest.mark.parametrize("text", ["", "]]]}}", '[[{"\\', "\\\\", '\\"]]'])
def test_the_depth_is_counted_on_structure_not_on_brackets_in_strings(text: str) -> None:
    assert too_deep(_depth(MAX_NESTING, text=text)) is False
    assert too_deep(_depth(MAX_NESTING + 1, text=text)) is True
    assert body_errors(_depth(MAX_NESTING + 1, text=text))[0]["type"] == "too_deep"


def test_wide_bodies_and_bodies_that_are_not_json_are_not_too_deep() -> None:
    wide = json.dumps([{"a": [1, {"b": [2]}], "s": "[[[[" * 100} for _ in range(5000)]).encode()
    assert too_deep(wide) is False and body_errors(wide) == []
    assert too_deep(b"\x00" + b"[" * 500) is False  # not a JSON container: its route answers it
    assert too_deep(b" \n[" + b"[" * 500) is True  # unclosed, as deep as it opens
