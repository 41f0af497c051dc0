"""A record's bytes, stored so that PostgreSQL never refuses them.

Any producer with write access to a topic decides what a record holds: a NUL character in a header, a JSON value
with ``\\u0000`` in a string, a version that is not a number. PostgreSQL refuses NUL in ``text`` and in jsonb
strings, and a refusal while parking or archiving would stop a worker for good (the same record comes back after
every restart). So text columns get a readable, sanitised copy, and the exact bytes go where they fit: header
values as base64, header names as base64 when jsonb cannot hold them, the value in a ``bytea`` column.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import orjson

#: What PostgreSQL's text types cannot hold, or what cannot be encoded to UTF-8, is shown as this.
REPLACEMENT = "\ufffd"
_INT4_MAX = 2**31 - 1


def safe_text(text: str) -> str:
    """``text`` with every NUL and lone surrogate replaced, so a ``text`` column accepts it."""
    if "\x00" in text:
        text = text.replace("\x00", REPLACEMENT)
    try:
        text.encode()
    except UnicodeEncodeError:
        text = text.encode(errors="surrogatepass").decode(errors="replace")
    return text


def _jsonb_safe(text: str) -> bool:
    return safe_text(text) is text


def encode_headers(headers: Sequence[tuple[str, bytes | None]]) -> list[Any]:
    """Headers as jsonb-safe JSON, losslessly: ``[name, base64 value]``, or an object when the name needs base64."""
    out: list[Any] = []
    for name, value in headers:
        encoded = base64.b64encode(value or b"").decode()
        if _jsonb_safe(name):
            out.append([name, encoded])
        else:
            out.append({"name_b64": base64.b64encode(name.encode(errors="surrogatepass")).decode(), "value": encoded})
    return out


def decode_headers(encoded: Any) -> list[tuple[str, bytes]]:
    """The headers ``encode_headers`` stored (given as JSON text or as the loaded list)."""
    pairs = orjson.loads(encoded) if isinstance(encoded, str | bytes) else encoded
    out: list[tuple[str, bytes]] = []
    for pair in pairs:
        if isinstance(pair, dict):
            name = base64.b64decode(pair["name_b64"]).decode(errors="surrogatepass")
            out.append((name, base64.b64decode(pair["value"])))
        else:
            out.append((str(pair[0]), base64.b64decode(pair[1])))
    return out


def jsonb_accepts(value: bytes | None) -> bool:
    """Whether a jsonb column takes ``value`` (JSON text, as UTF-8) as it is; if not, the bytes are kept apart."""
    if value is None:
        return False
    try:
        parsed = orjson.loads(value)  # strict: invalid UTF-8 and lone surrogates are refused here already
    except orjson.JSONDecodeError:
        return False
    # jsonb refuses the NUL character in any string; only a value that spells it can hold one.
    return not (b"\\u0000" in value and _holds_nul(parsed))


def _holds_nul(node: Any) -> bool:
    if isinstance(node, str):
        return "\x00" in node
    if isinstance(node, dict):
        return any("\x00" in k or _holds_nul(v) for k, v in node.items())
    if isinstance(node, list):
        return any(_holds_nul(v) for v in node)
    return False


def int4_or_none(text: str | None) -> int | None:
    """``text`` as an ``integer`` column value when it is a plain decimal number within range."""
    if not text or not text.isascii() or not text.isdigit():
        return None
    number = int(text)
    return number if number <= _INT4_MAX else None
