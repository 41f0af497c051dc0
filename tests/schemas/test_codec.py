"""The wire format: values and headers in, typed events out, and clear errors for anything else."""

from __future__ import annotations

import json
from typing import Any, ClassVar, Literal

import orjson
import pytest

from schemas import (
    EVENT_BY_TYPE,
    DecodeError,
    Event,
    MalformedEvent,
    RolloutEnqueued,
    UnknownEventType,
    codec,
    decode,
    decode_dict,
    encode,
)
from tests.fixtures.events import make_rollout_enqueued, sample_events


@pytest.mark.parametrize("event", sample_events(), ids=lambda e: e.type)
def test_every_event_round_trips_through_the_codec(event: Event):
    value, headers = encode(event)
    assert decode(value, headers) == event


def test_headers_follow_the_cloudevents_kafka_binary_binding():
    event = make_rollout_enqueued(source="/agl/test")
    _, headers = encode(event)
    h = dict(headers)
    assert h["ce_specversion"] == b"1.0"
    assert h["ce_id"] == str(event.event_id).encode()
    assert h["ce_type"] == b"rollout.enqueued"
    assert h["ce_source"] == b"/agl/test"
    assert h["content-type"] == b"application/json"
    assert h["event_version"] == b"1"
    assert h["ce_time"].decode().startswith(event.occurred_at.date().isoformat())


def test_envelope_only_in_headers_is_taken_from_them():
    event = make_rollout_enqueued()
    value, headers = encode(event)
    body = orjson.loads(value)
    for field in ("event_id", "type", "version", "occurred_at", "source"):
        del body[field]
    assert decode(orjson.dumps(body), headers) == event


def test_events_are_frozen_and_reject_unknown_fields():
    event = make_rollout_enqueued()
    with pytest.raises(ValueError, match="frozen"):
        event.priority = 5  # type: ignore[misc]
    data = orjson.loads(encode(event)[0]) | {"prioritty": 5}
    with pytest.raises(MalformedEvent, match=r"prioritty: Extra inputs are not permitted"):
        decode_dict(data)


@pytest.mark.parametrize(
    ("value", "headers", "error", "message"),
    [
        (None, [], MalformedEvent, "no value"),
        (b"{not json", [], MalformedEvent, "not JSON"),
        (b"[1, 2]", [], MalformedEvent, "JSON list, not an object"),
        (b"{}", [], MalformedEvent, "no 'type'"),
        (b'{"type": "rollout.exploded"}', [], UnknownEventType, "unknown event type 'rollout.exploded'"),
        (b'{"type": "rollout.cancelled", "version": 9}', [], UnknownEventType, "version 9 is newer"),
        (b'{"type": "rollout.cancelled", "version": "1"}', [], MalformedEvent, "not a positive whole number"),
        (b'{"type": "rollout.cancelled"}', [("event_version", b"x")], MalformedEvent, "event_version='x'"),
        (b'{"type": "rollout.cancelled"}', [("ce_type", b"rollout.enqueued")], MalformedEvent, "contradicts"),
        (b'{"type": "rollout.cancelled"}', [("content-type", b"text/plain")], MalformedEvent, "text/plain"),
        (b'{"type": "rollout.cancelled"}', [("ce_id", b"\xff")], MalformedEvent, "'ce_id' is not UTF-8"),
        (b'{"type": "rollout.cancelled"}', [], MalformedEvent, r"rollout_id: Field required"),
        (
            b'{"type": "reward.assigned", "rollout_id": "ro-1", "value": "NaN"}',
            [],
            MalformedEvent,
            r"value: Value error, a reward must be a finite number",
        ),
        (
            b'{"type": "rollout.enqueued", "rollout_id": "r", "input": 1, "occurred_at": "2025-01-01T00:00:00"}',
            [],
            MalformedEvent,
            r"occurred_at: Input should have timezone info",
        ),
    ],
)
def test_malformed_records_name_what_is_wrong(value, headers, error, message):
    with pytest.raises(error, match=message) as info:
        decode(value, headers)
    assert isinstance(info.value, DecodeError)
    assert not info.value.retriable


class _NoteV2(Event):
    """A throwaway event with two past versions, to exercise the upcaster chain."""

    key_field: ClassVar[str] = "note_id"
    type: Literal["test.noted"] = "test.noted"
    version: Literal[3] = 3
    note_id: str
    text: str
    tags: tuple[str, ...]

    @staticmethod
    def upcast_v1_v2(data: dict[str, Any]) -> dict[str, Any]:
        data["text"] = data.pop("body")
        return data

    @staticmethod
    def upcast_v2_v3(data: dict[str, Any]) -> dict[str, Any]:
        data.setdefault("tags", ())
        return data


def test_old_versions_are_upcast_in_order(monkeypatch):
    monkeypatch.setitem(EVENT_BY_TYPE, "test.noted", _NoteV2)
    v1 = {"type": "test.noted", "version": 1, "note_id": "n", "body": "hello"}
    event = decode(json.dumps(v1).encode())
    assert isinstance(event, _NoteV2)
    assert (event.version, event.text, event.tags) == (3, "hello", ())


def test_a_decoded_event_is_the_current_class():
    event = make_rollout_enqueued()
    assert type(decode(*encode(event))) is RolloutEnqueued


def _general(value: bytes, headers: list[tuple[str, bytes]]) -> Event:
    """The general path alone (orjson -> dict -> header merge -> upcast -> validate), for comparison."""
    data = orjson.loads(value)
    codec._merge_envelope(data, codec.headers_dict(headers))
    return decode_dict(data)


@pytest.mark.parametrize("event", sample_events(), ids=lambda e: e.type)
def test_the_fast_path_gives_what_the_general_path_gives(event: Event):
    value, headers = encode(event)
    fast = codec._decode_current(value, codec.headers_dict(headers))
    assert fast is not None, "a current-version record should take the fast path"
    assert fast == _general(value, headers) == event


def test_the_fast_path_leaves_envelope_only_in_headers_to_the_general_path():
    event = make_rollout_enqueued()
    value, headers = encode(event)
    body = orjson.loads(value)
    del body["event_id"], body["occurred_at"]
    value = orjson.dumps(body)
    assert codec._decode_current(value, codec.headers_dict(headers)) is None
    assert decode(value, headers) == event  # event_id and occurred_at come from ce_id and ce_time


def test_old_versions_named_in_headers_still_go_through_the_upcasters(monkeypatch):
    monkeypatch.setitem(EVENT_BY_TYPE, "test.noted", _NoteV2)
    v1 = orjson.dumps({"type": "test.noted", "version": 1, "note_id": "n", "body": "hello"})
    for headers in ([("ce_type", b"test.noted"), ("event_version", b"1")], [("ce_type", b"test.noted")]):
        event = decode(v1, headers)
        assert isinstance(event, _NoteV2)
        assert (event.version, event.text, event.tags) == (3, "hello", ())


@pytest.mark.parametrize(
    ("value", "message"),
    [
        # pydantic's JSON parser accepts NaN; orjson (the general path) does not: the record must stay rejected.
        (b'{"type": "rollout.enqueued", "rollout_id": "r", "input": NaN}', "not JSON"),
        (b'{"type": "rollout.enqueued", "rollout_id": "r", "input": 1, "priority": "high"}', "priority"),
        (b'{"type": "rollout.cancelled", "rollout_id": "r"}', "contradicts"),
    ],
)
def test_records_the_fast_path_rejects_get_the_general_paths_errors(value, message):
    headers = [("ce_type", b"rollout.enqueued"), ("event_version", b"1"), ("content-type", b"application/json")]
    with pytest.raises(MalformedEvent, match=message):
        decode(value, headers)
