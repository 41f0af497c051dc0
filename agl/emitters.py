"""Emitters: rewards, messages, objects, exceptions and operations as spans of the current attempt.

Each is encoded exactly as Agent Lightning v0.3 encodes it, so traces read the same in either system:

- ``emit_reward``: a span ``agentlightning.annotation`` with ``agentlightning.reward.{i}.name|value`` (entry 0
  is the primary reward; a scalar's is named ``primary``), optional ``agentlightning.link.{i}.key_match|
  value_match`` naming the rewarded span (``span_id``) or response (``gen_ai.response.id``, the attribute Agent
  Lightning's links match), and tags
  ``agentlightning.tag.{i}``. It also records the ``reward.assigned`` event the runner posts (as before): its
  ``span_id`` is the annotation span's (the triplet adapter then sees it as that span's mirror and uses the
  span), or, when linked, the rewarded call's ``span_id`` / ``response_id``.
- ``emit_message``: ``agentlightning.message`` with ``agentlightning.message.body``.
- ``emit_object``: ``agentlightning.object`` with ``agentlightning.object.type`` and either
  ``agentlightning.object.literal`` (str, int, float, bool; bytes as base64) or ``agentlightning.object.json``.
- ``emit_exception``: ``agentlightning.exception`` with OTel's ``exception.type|message|escaped|stacktrace``.
- ``operation``: ``agentlightning.operation`` around a block or a call, with ``agentlightning.operation.name``
  (the function's name), flattened ``agentlightning.operation.input.*`` and ``agentlightning.operation.output``;
  an exception is recorded on the span (status ERROR) and raised on.

Outside a traced attempt (tracing off, or no runner) the span part does nothing, so agent code still runs;
``emit_reward`` still records its event inside a rollout (and raises outside one, as it always did).
"""

from __future__ import annotations

import base64
import functools
import inspect
import json
import math
import re
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Self, TypeVar, cast, overload

from opentelemetry import trace as trace_api
from opentelemetry.trace import Status, StatusCode, format_span_id

from agl import agent, tracer
from agl.agent import AgentError, EmittedReward
from agl.span_attributes import AttributeValue, flat_attributes, flatten, sanitize

if TYPE_CHECKING:
    from contextlib import AbstractContextManager
    from types import TracebackType

AGL_ANNOTATION = "agentlightning.annotation"
AGL_MESSAGE = "agentlightning.message"
AGL_OBJECT = "agentlightning.object"
AGL_EXCEPTION = "agentlightning.exception"
AGL_OPERATION = "agentlightning.operation"
REWARD = "agentlightning.reward"
LINK = "agentlightning.link"
TAG = "agentlightning.tag"
MESSAGE_BODY = "agentlightning.message.body"
OBJECT_TYPE = "agentlightning.object.type"
OBJECT_LITERAL = "agentlightning.object.literal"
OBJECT_JSON = "agentlightning.object.json"
OPERATION_NAME = "agentlightning.operation.name"
OPERATION_INPUT = "agentlightning.operation.input"
OPERATION_OUTPUT = "agentlightning.operation.output"

_SPAN_ID = re.compile(r"^[0-9a-f]{16}$")
F = TypeVar("F", bound=Callable[..., Any])


def _emit_span(name: str, attributes: Mapping[str, AttributeValue], status: StatusCode | None = None) -> str | None:
    """An instant span of the current attempt (a child of the current span); its id, or None when not traced."""
    if not tracer.active():
        return None
    now = time.time_ns()  # a point in time, not an interval: it annotates the moment it is emitted
    span = tracer.get_tracer().start_span(name, attributes=attributes, start_time=now)
    if status is not None:
        span.set_status(Status(status))
    span.end(end_time=now)
    return format_span_id(span.get_span_context().span_id)


# -- rewards ----------------------------------------------------------------------------------------------------
def emit_reward(
    value: float | Mapping[str, float],
    *,
    name: str | None = None,
    dimensions: Mapping[str, float] | None = None,
    primary_key: str | None = None,
    link: object = None,
    response_id: str | None = None,
    tags: Sequence[str] = (),
    attributes: Mapping[str, Any] | None = None,
) -> str | None:
    """Reward the current attempt: a number, or named dimensions (``{"correct": 1.0, "short": 0.5}``).

    The primary reward is ``value`` (named ``name``), or the dimension ``primary_key`` (default: ``name``
    if it is a key, else the first key); ``dimensions`` adds further named values. ``link`` binds the reward to
    the call it rewards: an OTel span, a span id (16 hex digits), or an LLM reply (``ChatResult``, whose span
    and response id it names); ``response_id`` names a ``gen_ai.response.id``. Unlinked rewards are matched to
    calls by position, and the last one is the attempt's final reward.

    Answers the annotation span's id (None when the attempt is not traced).

    Raises:
        AgentError: outside a rollout, a value that is not a finite number, or a link of another kind.
    """
    scope = agent._SCOPE.get()
    if scope is None:
        raise AgentError("emit_reward() is called from inside a rollout (the runner sets the current rollout)")
    named = _dimensions(value, name, dimensions, primary_key)
    span_id, linked_response = _link(link, response_id)
    annotation: dict[str, Any] = {REWARD: [{"name": n, "value": v} for n, v in named]}
    if span_id is not None:
        annotation[LINK] = [{"key_match": "span_id", "value_match": span_id}]
    elif linked_response is not None:
        annotation[LINK] = [{"key_match": "gen_ai.response.id", "value_match": linked_response}]
    span_attributes = flat_attributes(annotation) | flat_attributes({TAG: list(tags)}, expand_leaf_lists=True)
    span_attributes |= flat_attributes(dict(attributes or {}))
    annotation_id = _emit_span(AGL_ANNOTATION, span_attributes, StatusCode.OK)
    (primary_name, primary), *others = named
    event_name = primary_name if (name is not None or isinstance(value, Mapping)) else "reward"
    linked = span_id is not None or linked_response is not None
    scope.rewards.append(
        EmittedReward(
            primary,
            event_name,
            dict(others),
            span_id=span_id if linked else annotation_id,
            response_id=linked_response,
        )
    )
    return annotation_id


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise AgentError(f"a reward is a finite number, not {value!r} ({what})")
    return float(value)


def _dimensions(
    value: float | Mapping[str, float], name: str | None, extra: Mapping[str, float] | None, primary_key: str | None
) -> list[tuple[str, float]]:
    """The reward's (name, value) pairs, primary first."""
    if isinstance(value, Mapping):
        values = {str(k): _number(v, str(k)) for k, v in value.items()}
        if not values:
            raise AgentError("a multi-dimensional reward has at least one dimension")
        key = primary_key or (name if name in values else next(iter(values)))
        if key not in values:
            raise AgentError(f"primary_key {key!r} is not one of the reward's dimensions {list(values)}")
        named = [(key, values[key])] + [(k, v) for k, v in values.items() if k != key]
    else:
        named = [(name or "primary", _number(value, "value"))]
    taken = {n for n, _ in named}
    named += [(str(k), _number(v, str(k))) for k, v in (extra or {}).items() if k not in taken]
    return named


def _link(link: object, response_id: str | None) -> tuple[str | None, str | None]:
    """(span id, response id) a link names."""
    if link is None:
        return None, response_id
    if isinstance(link, str):
        if not _SPAN_ID.match(link):
            raise AgentError(f"link {link!r} is not a span id (16 hex digits); name a response with response_id=")
        return link, response_id
    if isinstance(link, trace_api.Span):
        context = link.get_span_context()
        return (format_span_id(context.span_id) if context.is_valid else None), response_id
    if hasattr(link, "span_id") and hasattr(link, "response_id"):  # an LLM reply (agl.llm.ChatResult)
        return getattr(link, "span_id", None), response_id or getattr(link, "response_id", None)
    raise AgentError(f"link is a span, a span id or an LLM reply, not {type(link).__name__}")


# -- messages, objects, exceptions -------------------------------------------------------------------------------
def emit_message(message: str, attributes: Mapping[str, Any] | None = None) -> str | None:
    """A text message as a span of the attempt (logs kept beside the trace). Answers its span id, or None."""
    if not isinstance(message, str):
        raise TypeError(f"a message is a string, not {type(message).__name__}")
    return _emit_span(AGL_MESSAGE, {MESSAGE_BODY: message} | flat_attributes(dict(attributes or {})))


def encode_object(value: Any) -> dict[str, AttributeValue]:
    """The attributes of an object span: literals as text with their type, bytes as base64, the rest as JSON."""
    if isinstance(value, (str, int, float, bool)):
        return {OBJECT_TYPE: type(value).__name__, OBJECT_LITERAL: str(value)}
    if isinstance(value, bytes):
        return {OBJECT_TYPE: "bytes", OBJECT_LITERAL: base64.b64encode(value).decode("ascii")}
    try:
        serialized = json.dumps(value)
    except (TypeError, ValueError) as e:
        raise TypeError(f"an emitted object is JSON-serializable, not {type(value).__name__}") from e
    kind = type(value)
    qualified = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
    return {OBJECT_TYPE: qualified, OBJECT_JSON: serialized}


def emit_object(value: Any, attributes: Mapping[str, Any] | None = None) -> str | None:
    """Any JSON-serializable value (or bytes) as a span of the attempt. Answers its span id, or None."""
    encoded = encode_object(value)
    return _emit_span(AGL_OBJECT, encoded | flat_attributes(dict(attributes or {})), StatusCode.OK)


def exception_attributes(exception: BaseException) -> dict[str, AttributeValue]:
    stacktrace = "".join(traceback.format_exception(type(exception), exception, exception.__traceback__))
    attributes: dict[str, AttributeValue] = {
        "exception.type": type(exception).__name__,
        "exception.message": str(exception),
        "exception.escaped": True,
    }
    if stacktrace.strip():
        attributes["exception.stacktrace"] = stacktrace
    return attributes


def emit_exception(exception: BaseException, attributes: Mapping[str, Any] | None = None) -> str | None:
    """An exception (handled or not) as a span of the attempt; the span itself is OK. Its id, or None."""
    if not isinstance(exception, BaseException):
        raise TypeError(f"emit_exception takes an exception, not {type(exception).__name__}")
    encoded = exception_attributes(exception) | flat_attributes(dict(attributes or {}))
    return _emit_span(AGL_EXCEPTION, encoded, StatusCode.OK)


# -- operations -------------------------------------------------------------------------------------------------
class Operation:
    """A span ``agentlightning.operation`` around a block (``with``) or each call of a function (decorator).

    In a block, record what goes in and out with :meth:`set_input` and :meth:`set_output`; as a decorator the
    bound arguments and the return value are recorded by themselves. Not traced: the block or call just runs.
    """

    def __init__(self, attributes: Mapping[str, Any]) -> None:
        self.attributes = flatten(dict(attributes))
        self.span_id: str | None = None
        self._span: trace_api.Span | None = None
        self._context: AbstractContextManager[trace_api.Span] | None = None

    def __enter__(self) -> Self:
        if tracer.active():
            self._context = tracer.get_tracer().start_as_current_span(
                AGL_OPERATION,
                attributes=sanitize(self.attributes),
                record_exception=False,  # recorded once, below, as Agent Lightning's operation context does
                set_status_on_exception=False,
            )
            self._span = self._context.__enter__()
            self.span_id = format_span_id(self._span.get_span_context().span_id)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        context, span = self._context, self._span
        self._context = self._span = None
        if context is None or span is None:
            return
        if exc is not None:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, str(exc)))
        context.__exit__(exc_type, exc, tb)

    def set_input(self, *args: Any, **kwargs: Any) -> None:
        """Record inputs: positional ones as ``input.args.<i>``, keyword ones as ``input.<name>``."""
        attributes = flatten(dict(enumerate(args)), f"{OPERATION_INPUT}.args") | flatten(kwargs, OPERATION_INPUT)
        self._record(attributes)

    def set_output(self, output: Any) -> None:
        self._record(flatten(output, OPERATION_OUTPUT))

    def _record(self, attributes: Mapping[str, Any]) -> None:
        if self._span is not None and attributes:
            self._span.set_attributes(sanitize(attributes))

    def __call__(self, fn: F) -> F:
        signature = inspect.signature(fn)
        base = {OPERATION_NAME: fn.__name__, **self.attributes}

        def inputs(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
            try:
                bound = signature.bind(*args, **kwargs)
            except TypeError:  # the call itself will raise; still say what it was given
                return flatten({"args": list(args), "kwargs": kwargs}, OPERATION_INPUT)
            bound.apply_defaults()
            recorded: dict[str, Any] = {}
            for param, value in bound.arguments.items():
                # Each item of *args under its index, as Agent Lightning does.
                positional = signature.parameters[param].kind is inspect.Parameter.VAR_POSITIONAL
                recorded |= flatten({param: dict(enumerate(value)) if positional else value}, OPERATION_INPUT)
            return recorded

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def call_async(*args: Any, **kwargs: Any) -> Any:
                with Operation(base) as op:
                    op._record(inputs(args, kwargs))
                    result = await fn(*args, **kwargs)
                    op.set_output(result)
                    return result

            return cast("F", call_async)

        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            with Operation(base) as op:
                op._record(inputs(args, kwargs))
                result = fn(*args, **kwargs)
                op.set_output(result)
                return result

        return cast("F", call)


@overload
def operation(fn: F, /, *, name: str | None = None, **attributes: Any) -> F: ...
@overload
def operation(fn: None = None, /, *, name: str | None = None, **attributes: Any) -> Operation: ...
def operation(fn: F | None = None, /, *, name: str | None = None, **attributes: Any) -> F | Operation:
    """``@operation``, ``@operation(name=..., **attributes)`` or ``with operation(...) as op:``.

    ``name`` sets ``agentlightning.operation.name`` (a decorated function's name otherwise); further keyword
    arguments become attributes of the span.
    """
    if name is not None:
        attributes[OPERATION_NAME] = name
    if fn is None:
        return Operation(attributes)
    if not callable(fn):
        raise TypeError(f"@operation decorates a function, not {type(fn).__name__}")
    return Operation(attributes)(fn)
