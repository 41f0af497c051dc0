"""OTLP/HTTP wire rules of the trace receiver: content types, decompression with a cap, decoding, answers.

Source: the OTLP specification, section "OTLP/HTTP". Binary protobuf (``application/x-protobuf``, the fast path
and what every stock exporter sends) and OTLP/JSON (``application/json``) share one route, told apart by
Content-Type; an answer uses the request's content type. OTLP/JSON is proto3 JSON with four deviations: ids
(``traceId``, ``spanId``, ``parentSpanId``) are hex, enums are integers, unknown fields are ignored, keys are
lowerCamelCase. ``json_format.ParseDict`` reads a hex id without complaint as base64, into the wrong bytes, so
ids are turned into base64 before it parses.

Errors are a ``google.rpc.Status`` (code and message), encoded by hand: its two fields do not justify a
dependency on googleapis-common-protos.
"""

from __future__ import annotations

import base64
import zlib
from typing import Any

import orjson
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
CONTENT_TYPES = (PROTOBUF, JSON)

#: ``google.rpc.Code`` values of the answers (the specification leaves ``Status.code`` unused; set for humans).
INVALID_ARGUMENT, RESOURCE_EXHAUSTED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE = 3, 8, 12, 13, 14
_RPC_CODE = {400: INVALID_ARGUMENT, 405: UNIMPLEMENTED, 413: RESOURCE_EXHAUSTED, 415: INVALID_ARGUMENT,
             501: UNIMPLEMENTED, 503: UNAVAILABLE}  # fmt: skip

#: An id that is not hex becomes these bytes: of no valid id length, so the span is rejected, not the batch.
_NOT_HEX = base64.b64encode(b"\xff").decode()
_ID_KEYS = ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id")


class WireError(Exception):
    """A request the receiver answers with ``status`` and a Status body, before anything is committed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def media_type(content_type: str) -> str:
    """``application/json; charset=utf-8`` -> ``application/json``."""
    return content_type.split(";", 1)[0].strip().lower()


def decompressed(body: bytes, content_encoding: str, cap: int) -> bytes:
    """The body without its Content-Encoding (gzip, deflate, identity), never more than ``cap`` bytes.

    Raises:
        WireError: 413 past ``cap`` (the specification's limit "including after decompression"), 400 for a
            corrupt or truncated stream, 415 for an encoding the receiver does not speak.
    """
    codings = [c.strip().lower() for c in content_encoding.split(",") if c.strip()]
    for coding in reversed(codings):  # applied in the order listed, so undone from the last
        if coding == "identity":
            continue
        if coding in ("gzip", "x-gzip"):
            body = _inflate(body, 16 + zlib.MAX_WBITS, cap, "gzip")
        elif coding == "deflate":
            # HTTP's deflate is the zlib format, but raw deflate streams are common in the wild: accept both.
            body = _inflate(body, zlib.MAX_WBITS if _zlib_header(body) else -zlib.MAX_WBITS, cap, "deflate")
        else:
            raise WireError(415, f"Content-Encoding {coding!r} is not supported; send gzip, deflate or none")
    return body


def _zlib_header(data: bytes) -> bool:
    return len(data) >= 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0


def _inflate(data: bytes, wbits: int, cap: int, name: str) -> bytes:
    out = bytearray()
    while True:
        inflater = zlib.decompressobj(wbits)
        try:
            # At most one byte past the cap is ever produced: a zip bomb costs what the cap allows, no more.
            out += inflater.decompress(data, cap + 1 - len(out))
        except zlib.error as e:
            raise WireError(400, f"the body is not valid {name} data: {e}") from None
        if len(out) > cap:
            raise WireError(413, f"the decompressed body exceeds {cap} bytes; export smaller batches")
        if not inflater.eof:
            raise WireError(400, f"the {name} stream is truncated")
        data = inflater.unused_data
        if not data or name != "gzip":  # gzip allows several members one after the other
            return bytes(out)


def parse_request(body: bytes, content_type: str) -> ExportTraceServiceRequest:
    """The ExportTraceServiceRequest of a (decompressed) body; an empty body is an empty request.

    Raises:
        WireError: 400 when the body does not decode.
    """
    if content_type == PROTOBUF:
        try:
            return ExportTraceServiceRequest.FromString(body)
        except (DecodeError, RecursionError) as e:
            raise WireError(400, f"the body is not an OTLP ExportTraceServiceRequest in protobuf: {e}") from None
    if not body.strip():
        return ExportTraceServiceRequest()
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise WireError(400, f"the body is not JSON: {e}") from None
    if not isinstance(document, dict):
        raise WireError(400, "the body is not an OTLP/JSON ExportTraceServiceRequest (a JSON object)")
    _hex_ids_to_base64(document)
    try:
        return json_format.ParseDict(document, ExportTraceServiceRequest(), ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as e:
        raise WireError(400, f"the body is not an OTLP/JSON ExportTraceServiceRequest: {e}") from None


def _items(node: Any, *keys: str) -> list[Any]:
    if not isinstance(node, dict):
        return []
    for key in keys:
        value = node.get(key)
        if isinstance(value, list):
            return value
    return []


def _hex_ids_to_base64(document: dict[str, Any]) -> None:
    """Rewrite, in place, the hex ids of spans and links as the base64 that proto3 JSON means by ``bytes``."""
    for resource_spans in _items(document, "resourceSpans", "resource_spans"):
        for scope_spans in _items(resource_spans, "scopeSpans", "scope_spans"):
            for span in _items(scope_spans, "spans"):
                _fix_ids(span)
                for link in _items(span, "links"):
                    _fix_ids(link)


def _fix_ids(node: Any) -> None:
    if not isinstance(node, dict):
        return
    for key in _ID_KEYS:
        value = node.get(key)
        if isinstance(value, str):
            try:
                node[key] = base64.b64encode(bytes.fromhex(value)).decode()
            except ValueError:
                node[key] = _NOT_HEX


def export_answer(content_type: str, rejected: int = 0, message: str = "") -> bytes:
    """The 200 body: an empty ExportTraceServiceResponse for full success, ``partial_success`` otherwise."""
    response = ExportTraceServiceResponse()
    if rejected or message:
        response.partial_success.rejected_spans = rejected
        response.partial_success.error_message = message
    if content_type == JSON:
        # proto3 JSON: camelCase keys, the int64 rejectedSpans as a string, as the specification shows.
        return orjson.dumps(json_format.MessageToDict(response))
    return response.SerializeToString()


def status_answer(content_type: str, status: int, message: str) -> bytes:
    """A ``google.rpc.Status`` body for a 4xx/5xx answer, in JSON or protobuf."""
    code = _RPC_CODE.get(status, INTERNAL)
    if content_type == JSON:
        return orjson.dumps({"code": code, "message": message})
    text = message.encode()
    return b"\x08" + _varint(code) + b"\x12" + _varint(len(text)) + text


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)
