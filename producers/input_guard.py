"""Refuse (422) what the log can carry but the stack cannot store: NUL, lone surrogates, non-finite numbers,
integers beyond 64 bits, and JSON nested more than :data:`MAX_NESTING` levels deep.

PostgreSQL refuses ``\\u0000`` in ``text`` and ``jsonb``, and a lone UTF-16 surrogate (``\\ud800``) is not
Unicode at all: JSON encoders fail on it. Accepted, either becomes an event every projection parks, whose key is
then blocked and whose archive copy leaves a gap. ``NaN`` and ``Infinity`` are not JSON: the event would carry
``null`` instead of what the client sent. An integer beyond 64 bits is JSON, but orjson (which hashes
commands and encodes events) cannot encode it: the request would end in a server error. This guard checks every
body, path and query string before any route runs, so every route family (and any route added later) answers
422 naming the field, and publishes nothing.

Bodies are scanned as bytes first; only a body that may hold such a value is parsed (leniently, so the value
survives to be located) and walked, so ordinary requests pay a few literal scans. (A number that overflows a
double, ``1e999``, is not looked for: its digits look like any hex id's, and orjson refuses it anyway.)
"""

from __future__ import annotations

import itertools
import json
import math
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from producers.http import invalid_answer

if TYPE_CHECKING:
    from collections.abc import Iterator

    from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: What an unsafe value looks like in a JSON body's bytes: a NUL or surrogate escape, or a UTF-8 encoded
#: surrogate (Python's json reads it). A match only means "look closer" (it may be inside an ordinary string).
_ESCAPED = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")
_RAW_SURROGATE = re.compile(rb"\xed[\xa0-\xbf]")
_SURROGATE = re.compile("[\ud800-\udfff]")
INT_MIN, INT_MAX = -(2**63), 2**64 - 1
#: An integer orjson cannot encode (it takes -2**63 to 2**64 - 1) has twenty digits, or a minus and nineteen; a
#: positive nineteen-digit one (a nanosecond timestamp) is always in range. With every digit mapped to 0, both
#: shapes are literals: a regex for a run of digits tries a match at every digit, ten times slower.
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
_TWENTY_DIGITS, _MINUS_NINETEEN = b"0" * 20, b"-" + b"0" * 19


#: What may stand just before a JSON number: a separator or whitespace (or nothing: the body is the number).
_BEFORE_NUMBER = frozenset(b":,[ \t\r\n")


def _long_integer(body: bytes) -> bool:
    shapes = body.translate(_DIGITS_AS_ZERO)
    return _number_run(shapes, _TWENTY_DIGITS) or _number_run(shapes, _MINUS_NINETEEN)


def _number_run(shapes: bytes, run: bytes) -> bool:
    """Whether ``run`` is found in ``shapes`` where a number may start.

    Runs inside hex ids are the common false alarm (twenty decimal digits in a row, among a runner's report of a
    hundred attempts' ids, in one body in twenty; each cost a full parse): such a run follows a letter or a quote.
    A run following a separator is looked at closer, in a string too (the parse then finds nothing).
    """
    at = shapes.find(run)
    while at != -1:
        start = at
        while start > 0 and shapes[start - 1] == 0x30:  # back to the run's first digit
            start -= 1
        if start > 0 and shapes[start - 1] == 0x2D:  # its minus
            start -= 1
        if start == 0 or shapes[start - 1] in _BEFORE_NUMBER:
            return True
        end = at + len(run)
        while end < len(shapes) and shapes[end] == 0x30:  # past the rest of this run
            end += 1
        at = shapes.find(run, end)
    return False


Loc = tuple[str | int, ...]


def _text_problem(text: str) -> str | None:
    if "\x00" in text:
        return "NUL (\\u0000) is not allowed in text: PostgreSQL cannot store it"
    found = _SURROGATE.search(text)
    if found:
        return f"a lone surrogate (\\u{ord(found.group()):04x}) is not Unicode text"
    return None


def _printable(key: str) -> str:
    # A key is echoed in the error's loc: escape what would make the answer itself unencodable.
    return key.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\u0000")


def unsafe_values(data: Any, loc: Loc = ()) -> Iterator[dict[str, Any]]:
    """A 422 error (``type``, ``loc``, ``msg``) for each unstorable string, key or number in ``data``."""
    stack: list[tuple[Any, Loc]] = [(data, loc)]
    while stack:  # iterative: JSON nests deeper than Python recursion goes
        value, where = stack.pop()
        if isinstance(value, str):
            problem = _text_problem(value)
            if problem:
                yield {"type": "string_unstorable", "loc": where, "msg": problem}
        elif isinstance(value, float) and not math.isfinite(value):
            yield {"type": "finite_number", "loc": where, "msg": "NaN and Infinity are not JSON numbers"}
        elif isinstance(value, int) and not isinstance(value, bool) and not INT_MIN <= value <= INT_MAX:
            yield {"type": "int_range", "loc": where, "msg": f"an integer must lie within [{INT_MIN}, {INT_MAX}]"}
        elif isinstance(value, dict):
            for key, item in reversed(value.items()):
                problem = _text_problem(key)
                if problem:
                    yield {"type": "string_unstorable", "loc": (*where, _printable(key)), "msg": f"key: {problem}"}
                stack.append((item, (*where, _printable(key))))
        elif isinstance(value, list):
            stack.extend((item, (*where, i)) for i, item in reversed(list(enumerate(value))))


#: The deepest a JSON body may nest, in objects and arrays (the body itself counts one). The encoders and decoders
#: on an event's way (orjson's 254 levels, pydantic's JSON reader, Python's json) each stop near 250 levels, the
#: event's own included: a value nested a little less deeply than a request's validation refuses was answered 202
#: and then parked by a projection that could not decode the event, or answered 500 where orjson stopped.
MAX_NESTING = 128
TOO_DEEP = f"JSON nested more than {MAX_NESTING} levels deep is refused: the stack cannot store it"
#: What is not a bracket, and the brackets as steps of the nesting depth (signed bytes: +1 opens, -1 closes).
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_JSON_CONTAINER = re.compile(rb"\s*[\[{]")


def too_deep(body: bytes, limit: int = MAX_NESTING) -> bool:
    """Whether the JSON ``body`` nests objects and arrays more than ``limit`` levels deep.

    No parse (Python's json recurses per level, and a parse builds every value): the escaped backslashes and
    quotes are dropped, the strings cut out between their quotes (a bracket in a string is text), and the depth is
    the largest running sum of the remaining brackets' steps. About 10 microseconds per KB of a runner's reports;
    most bodies hold fewer brackets than ``limit`` and stop at the first line. Only a body that opens as a JSON
    object or array is looked at; one that is not JSON after all may be refused as too deep rather than as not
    JSON, a 422 either way.
    """
    if body.count(b"[") + body.count(b"{") <= limit or not _JSON_CONTAINER.match(body):
        return False
    if b"\\\\" in body or b'\\"' in body:
        body = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    outside = b"".join(body.split(b'"')[::2])
    steps = outside.translate(_STEPS, _NOT_BRACKETS)
    return len(steps) > limit and max(itertools.accumulate(memoryview(steps).cast("b"))) > limit


def body_errors(body: bytes) -> list[dict[str, Any]]:
    """Errors of the unstorable values in a JSON ``body``; none when it is clean or not JSON (the route says so)."""
    if too_deep(body):
        return [{"type": "too_deep", "loc": ("body",), "msg": TOO_DEEP}]
    # Literal scans (a few milliseconds per megabyte) instead of a parse: most bodies stop here.
    suspect = (
        b"NaN" in body
        or b"Infinity" in body
        or _ESCAPED.search(body)
        or _RAW_SURROGATE.search(body)
        or _long_integer(body)
    )
    if not suspect:
        return []
    try:
        # Python's json, unlike orjson, reads lone surrogates, NaN and Infinity: they must be found to be named.
        data = json.loads(body)
    except (ValueError, RecursionError):
        return []
    return sorted(unsafe_values(data, ("body",)), key=lambda e: [str(p) for p in e["loc"]])


def url_errors(scope: Scope) -> list[dict[str, Any]]:
    """A NUL in the path or in a query parameter (percent-encoded as ``%00``)."""
    errors: list[dict[str, Any]] = []
    if "\x00" in scope.get("path", ""):
        errors.append({"type": "string_unstorable", "loc": ("path",), "msg": _text_problem("\x00")})
    query: bytes = scope.get("query_string", b"")
    if b"%00" in query:
        for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
            problem = _text_problem(name) or _text_problem(value)
            if problem:
                errors.append({"type": "string_unstorable", "loc": ("query", _printable(name)), "msg": problem})
    return errors


class UnsafeInputGuard:
    """ASGI middleware: 422 for a request whose path, query or JSON body holds a value the stack cannot store."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        errors = url_errors(scope)
        if errors:
            await invalid_answer(errors)(scope, receive, send)
            return
        if scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        messages = [await receive()]
        while messages[-1]["type"] == "http.request" and messages[-1].get("more_body", False):
            messages.append(await receive())
        body = b"".join(m.get("body", b"") for m in messages)
        errors = body_errors(body)
        if errors:
            await invalid_answer(errors)(scope, receive, send)
            return
        # The route reads the body again: hand it what was received (or the disconnect), then the live channel.
        whole: Message = {"type": "http.request", "body": body, "more_body": False}
        pending: list[Message] = [whole] if messages[-1]["type"] == "http.request" else messages[-1:]

        async def replay() -> Message:
            return pending.pop(0) if pending else await receive()

        await self.app(scope, replay, send)
