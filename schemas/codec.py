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


def encode(event: Event) -> tuple[bytes, list[tuple[str, bytes]]]:
    """The record value and headers of ``event``."""
    value = event.__pydantic_serializer__.to_json(event)
    headers = [
        ("ce_specversion", SPEC_VERSION),
        ("ce_id", str(event.event_id).encode()),
        ("ce_type", event.type.encode()),
        ("ce_source", event.source.encode()),
        ("ce_time", event.occurred_at.isoformat().encode()),
        ("content-type", CONTENT_TYPE),
        ("event_version", str(event.version).encode()),
    ]
    return value, headers


def _headers_dict(headers: Iterable[tuple[str, bytes | None]] | None) -> dict[str, str]:
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


def decode(value: bytes | None, headers: Iterable[tuple[str, bytes | None]] | None = None) -> Event:
    """Turn a record's value and headers into an event.

    Raises:
        MalformedEvent: not JSON, not an object, contradictory headers, or fields that fail validation.
        UnknownEventType: a type, or a version, this code does not know.
    """
    if value is None:
        raise MalformedEvent("the record has no value (a tombstone is not an event)")
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError as e:
        raise MalformedEvent(f"the value is not JSON: {e}") from None
    if not isinstance(data, dict):
        raise MalformedEvent(f"the value is JSON {type(data).__name__}, not an object")
    hdrs = _headers_dict(headers)
    content_type = hdrs.get("content-type")
    if content_type is not None and not content_type.startswith("application/json"):
        raise MalformedEvent(f"content-type {content_type!r} is not application/json")
    _merge_envelope(data, hdrs)
    return decode_dict(data)
