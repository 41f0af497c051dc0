"""The wire format: a JSON value plus CloudEvents Kafka binary-binding headers.

Value: the event as JSON, envelope included (``event_id``, ``type``, ``version``, ``occurred_at``...).
Headers: ``ce_specversion``, ``ce_id``, ``ce_type``, ``ce_source``, ``ce_time``, ``content-type`` and
``event_version``. Any client that writes the same JSON and headers (confluent-kafka, a shell script) is decoded
like our own. A record whose JSON lacks envelope fields gets them from the headers (pure binary binding);
where both are present they must agree.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from pydantic import ValidationError

from schemas._base import Event
from schemas.catalog import EVENT_BY_TYPE, current_version
from schemas.errors import MalformedEvent, UnknownEventType

CONTENT_TYPE = b"application/json"
SPEC_VERSION = b"1.0"
Headers = Sequence[tuple[str, bytes]]

#: header -> envelope field, for records that carry the envelope only in headers
_HEADER_FIELDS = {"ce_id": "event_id", "ce_type": "type", "ce_source": "source", "ce_time": "occurred_at"}
#: Envelope fields the fast path cannot fill from headers: when such a header is present, the field must be
#: in the value too, or the fast path would let the field's default stand in for the header.
_HEADER_ONLY_FIELDS = (("ce_id", "event_id"), ("ce_source", "source"), ("ce_time", "occurred_at"))
_ENVELOPE_IN_VALUE = frozenset(field for _, field in _HEADER_ONLY_FIELDS)
#: ``str(version)`` of each class's current version, for comparing with the ``event_version`` header
_VERSION_TEXT: dict[type[Event], str] = {}


def encode(event: Event) -> tuple[bytes, list[tuple[str, bytes]]]:
    """The record value and headers of ``event``."""
    return encode_value(event), encode_headers(event)


def encode_value(event: Event) -> bytes:
    """The record value of ``event``: the event as JSON, envelope included."""
    return event.__pydantic_serializer__.to_json(event)


def encode_headers(event: Event) -> list[tuple[str, bytes]]:
    """The record headers of ``event``. They only format fields its value holds, so they cannot fail where
    ``encode_value`` succeeded (the publisher builds them late, while earlier records are in flight)."""
    return [
        ("ce_specversion", SPEC_VERSION),
        ("ce_id", str(event.event_id).encode()),
        ("ce_type", event.type.encode()),
        ("ce_source", event.source.encode()),
        ("ce_time", event.occurred_at.isoformat().encode()),
        ("content-type", CONTENT_TYPE),
        ("event_version", str(event.version).encode()),
    ]


def headers_dict(headers: Iterable[tuple[str, bytes | None]] | None) -> dict[str, str]:
    """The headers as text, by name (a later header of a name wins).

    Raises:
        MalformedEvent: a header value is not UTF-8.
    """
    out: dict[str, str] = {}
    for name, raw in headers or ():
        if raw is None:
            continue
        try:
            out[name] = raw.decode()
        except UnicodeDecodeError:
            raise MalformedEvent(f"header {name!r} is not UTF-8") from None
    return out


def _merge_envelope(data: dict[str, Any], headers: dict[str, str]) -> None:
    for header, field in (*_HEADER_FIELDS.items(), ("event_version", "version")):
        if header not in headers:
            continue
        value: Any = headers[header]
        if field == "version":
            if not value.isdigit():
                raise MalformedEvent(f"header event_version={value!r} is not a whole number")
            value = int(value)
        if field not in data:
            data[field] = value
        elif field in ("type", "version") and data[field] != value:
            raise MalformedEvent(f"header {header}={value!r} contradicts the value's {field}={data[field]!r}")


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors()[:5]:
        where = ".".join(str(p) for p in item["loc"]) or "(value)"
        parts.append(f"{where}: {item['msg']}")
    more = error.error_count() - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def decode_dict(data: dict[str, Any]) -> Event:
    """Validate a JSON object into the current version of its event class, upcasting older versions."""
    type_name = data.get("type")
    if not isinstance(type_name, str):
        raise MalformedEvent("the event has no 'type' (neither in the value nor in a ce_type header)")
    cls = EVENT_BY_TYPE.get(type_name)
    if cls is None:
        raise UnknownEventType(f"unknown event type {type_name!r}")
    target = current_version(cls)
    version = data.get("version", target)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise MalformedEvent(f"{type_name}: version {version!r} is not a positive whole number")
    if version > target:
        raise UnknownEventType(f"{type_name} version {version} is newer than this code knows (v{target})")
    while version < target:
        upcast = getattr(cls, f"upcast_v{version}_v{version + 1}")
        data = upcast(dict(data))
        version += 1
    data["version"] = target
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        raise MalformedEvent(f"{type_name} v{target}: {_describe(e)}") from None


def _current_class(headers: dict[str, str]) -> type[Event] | None:
    """The class named by ``ce_type``, if the headers say the value is of its current version, in JSON."""
    type_name = headers.get("ce_type")
    cls = None if type_name is None else EVENT_BY_TYPE.get(type_name)
    if cls is None:
        return None
    version = headers.get("event_version")
    if version is not None:
        current = _VERSION_TEXT.get(cls)
        if current is None:
            current = _VERSION_TEXT[cls] = str(current_version(cls))
        if version != current:
            return None
    content_type = headers.get("content-type")
    if content_type is not None and not content_type.startswith("application/json"):
        return None
    return cls


def _decode_current(value: bytes, headers: dict[str, str]) -> Event | None:
    """The fast path: a record of the current version, validated straight from its bytes; ``None`` = not sure.

    ``model_validate_json`` skips the intermediate dict (about half of the decode cost). It is taken only when
    the result cannot differ from the general path's: the class comes from ``ce_type``, ``event_version`` (if
    present) is the current one, and the model itself rejects a value whose ``type`` or ``version`` disagrees
    (both are ``Literal`` fields) or that needs an upcaster. Anything it rejects goes through the general path,
    which raises the descriptive error. JSON dialects differ on ``NaN``/``Infinity`` literals (orjson rejects
    them, pydantic's parser accepts them), so values containing those bytes take the general path too.
    """
    cls = _current_class(headers)
    if cls is None:
        return None
    # Two single-byte scans (memchr) first: the substring scans run only for values that hold an N or an I.
    if (b"N" in value or b"I" in value) and (b"NaN" in value or b"Infinity" in value):
        return None
    try:
        event = cls.model_validate_json(value)
    except ValidationError:
        return None
    given = event.model_fields_set
    if not given >= _ENVELOPE_IN_VALUE and any(
        header in headers and field not in given for header, field in _HEADER_ONLY_FIELDS
    ):
        return None  # the envelope is (partly) in the headers only: the general path merges it
    return event


def decode(
    value: bytes | None,
    headers: Iterable[tuple[str, bytes | None]] | None = None,
    *,
    parsed_headers: dict[str, str] | None = None,
) -> Event:
    """Turn a record's value and headers into an event.

    Records of the current version take a fast path (see ``_decode_current``); others, and any record the fast
    path rejects, are parsed into a dict, merged with the headers, upcast and validated. ``parsed_headers``:
    ``headers_dict(headers)``, when the caller has it already.

    Raises:
        MalformedEvent: not JSON, not an object, contradictory headers, or fields that fail validation.
        UnknownEventType: a type, or a version, this code does not know.
    """
    if value is None:
        raise MalformedEvent("the record has no value (a tombstone is not an event)")
    try:
        fast = _decode_current(value, parsed_headers if parsed_headers is not None else headers_dict(headers))
    except MalformedEvent:
        fast = None  # a header that is not UTF-8: the general path reports it, after checking the value
    if fast is not None:
        return fast
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError as e:
        raise MalformedEvent(f"the value is not JSON: {e}") from None
    if not isinstance(data, dict):
        raise MalformedEvent(f"the value is JSON {type(data).__name__}, not an object")
    hdrs = headers_dict(headers)
    content_type = hdrs.get("content-type")
    if content_type is not None and not content_type.startswith("application/json"):
        raise MalformedEvent(f"content-type {content_type!r} is not application/json")
    _merge_envelope(data, hdrs)
    return decode_dict(data)
