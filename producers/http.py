"""HTTP plumbing of the command API: the body size limit, one-or-many bodies, and error answers.

Every rejection happens before anything is published: bodies are parsed and validated in full first.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

if TYPE_CHECKING:
    from fastapi import FastAPI
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

M = TypeVar("M", bound=BaseModel)

#: Above this many items in one request the client is asked to split it (413), whatever their size.
MAX_ITEMS = 10_000


class _TooLarge(Exception):
    pass


class BodySizeLimit:
    """Answer 413 to a request whose body exceeds ``max_bytes``, declared (Content-Length) or streamed."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise _TooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await self._reject(scope, receive, send)

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        detail = f"the request body exceeds {self.max_bytes} bytes; split it into smaller requests"
        await JSONResponse({"detail": detail}, status_code=413)(scope, receive, send)


def _loc_errors(error: ValidationError, prefix: tuple[str | int, ...]) -> list[dict[str, Any]]:
    return [
        {"type": e["type"], "loc": (*prefix, *e["loc"]), "msg": e["msg"], "input": e.get("input")}
        for e in error.errors(include_url=False)
    ]


@functools.cache
def _list_adapter(model: type[M]) -> TypeAdapter[list[M]]:
    # Building a TypeAdapter compiles a validator: once per model, not once per request.
    return TypeAdapter(list[model])  # type: ignore[valid-type]


async def one_or_many(request: Request, model: type[M]) -> list[M]:
    """The body as a list of ``model``: a JSON object is one item, a JSON array is many.

    Raises:
        RequestValidationError: not JSON, an empty array, or an item that fails validation (answered 422).
    """
    try:
        data = orjson.loads(await request.body())
    except orjson.JSONDecodeError as e:
        raise RequestValidationError([{"type": "json_invalid", "loc": ("body",), "msg": f"not JSON: {e}"}]) from None
    if isinstance(data, list):
        if not data:
            raise RequestValidationError([{"type": "too_short", "loc": ("body",), "msg": "the list is empty"}])
        if len(data) > MAX_ITEMS:
            raise TooManyItems(len(data))
        try:
            return _list_adapter(model).validate_python(data)
        except ValidationError as e:
            raise RequestValidationError(_loc_errors(e, ("body",))) from None
    try:
        return [model.model_validate(data)]
    except ValidationError as e:
        raise RequestValidationError(_loc_errors(e, ("body",))) from None


class TooManyItems(Exception):
    def __init__(self, count: int) -> None:
        super().__init__(f"{count} items in one request; at most {MAX_ITEMS} are accepted, split the request")


def one_or_many_openapi(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` documenting a body that is one ``model`` or a list of them (see ``add_schemas``)."""
    item = {"$ref": f"#/components/schemas/{model.__name__}"}
    schema = {"oneOf": [item, {"type": "array", "items": item, "minItems": 1, "maxItems": MAX_ITEMS}]}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def add_schemas(app: FastAPI, models: list[type[BaseModel]]) -> None:
    """Add ``models`` to the OpenAPI components: bodies parsed by hand are invisible to FastAPI otherwise."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        cached = app.openapi_schema is not None
        document = build()
        if not cached:
            components = document.setdefault("components", {}).setdefault("schemas", {})
            for model in models:
                schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(schema.pop("$defs", {}))
                components[model.__name__] = schema
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def message_of(errors: list[Any]) -> str:
    """One line naming every failing field and why: ``body.0.input: Field required; ...``."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors)


# -- what the routes answer besides 2xx, for the OpenAPI document ------------------------------------------------
class FieldError(BaseModel):
    type: str
    loc: list[str | int] = Field(description="where: body, query or path, then the field's path")
    msg: str


class InvalidAnswer(BaseModel):
    """422: each failing field and why (the input itself is never echoed)."""

    detail: list[FieldError]
    message: str = Field(description="every failing field on one line: 'body.0.input: Field required; ...'")


class ErrorAnswer(BaseModel):
    detail: str


#: Declared by every route: the 422 above (also for NUL, lone surrogates and ids no path route can reach).
INVALID_RESPONSES: dict[int | str, dict[str, Any]] = {
    422: {"model": InvalidAnswer, "description": "a field is missing, malformed, out of bounds or unstorable"},
}
#: Declared by every command route.
COMMAND_RESPONSES: dict[int | str, dict[str, Any]] = {
    **INVALID_RESPONSES,
    413: {"model": ErrorAnswer, "description": "the body, its number of items or an event is too large"},
    503: {"model": ErrorAnswer, "description": "the broker is unavailable or the API is stopping: retry"},
}
#: Declared by the command routes about an entity that must exist.
NOT_FOUND_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorAnswer, "description": "no such rollout"},
}
#: Declared by the command routes that check a client-chosen id or key against earlier requests.
CONFLICT_RESPONSES: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorAnswer, "description": "an id or Idempotency-Key already used for a different request"},
}


def invalid_answer(errors: list[dict[str, Any]]) -> JSONResponse:
    """The 422 answer: each failing field (``loc``) and its reason, never the input itself."""
    errors = [{k: e[k] for k in ("type", "loc", "msg") if k in e} for e in errors]
    return JSONResponse({"detail": errors, "message": message_of(errors)}, status_code=422)


def install_error_answers(app: FastAPI) -> None:
    """422 names each failing field and its reason (without echoing the input); 413 for too many items."""

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return invalid_answer(list(exc.errors()))

    @app.exception_handler(TooManyItems)
    async def _too_many(_: Request, exc: TooManyItems) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=413)
