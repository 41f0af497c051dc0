"""One error shape, documented once: what every route may answer besides its own statuses.

Every 4xx and 5xx JSON answer of the API is ``ErrorAnswer`` (``{"detail": "why"}``), except 422, which is
``InvalidAnswer`` (``detail`` lists each failing field, ``message`` says it on one line), and the OTLP receiver's
answers, which are OTLP ``Status`` bodies as its protocol requires. Some statuses come from middlewares that see
every request (URL and body size limits, rate limits) or from FastAPI itself (a body it cannot read): no route
declares them, so they are added here to each operation they can reach, all pointing to the shared components.
"""

from __future__ import annotations

import copy
import json
from typing import TYPE_CHECKING, Any

from producers.route_families import route_family

if TYPE_CHECKING:
    from fastapi import FastAPI

ERROR = {"$ref": "#/components/schemas/ErrorAnswer"}
INVALID = {"$ref": "#/components/schemas/InvalidAnswer"}
_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}}

#: Answered by a middleware in front of every route.
EVERY_ROUTE: dict[str, dict[str, Any]] = {
    "414": {"description": "the path or the query string is longer than AGL_API_MAX_URL_BYTES"},
}
#: Answered to a request of a rate-limited family (every one but health probes).
LIMITED_ROUTE: dict[str, dict[str, Any]] = {
    "429": {"description": "too many requests from this client for this route family", "headers": _RETRY_AFTER},
}
#: Answered to any request with a body, before the route reads it.
BODY_ROUTE: dict[str, dict[str, Any]] = {
    "400": {"description": "the body could not be read as the declared content type"},
    "413": {"description": "the body is larger than the API accepts"},
}
#: Answered by a route that remembers an Idempotency-Key.
KEYED_ROUTE: dict[str, dict[str, Any]] = {
    "409": {"description": "the Idempotency-Key was already used for a different request"},
}


def _json(schema: dict[str, str]) -> dict[str, Any]:
    return {"application/json": {"schema": dict(schema)}}


def _add(responses: dict[str, Any], extra: dict[str, dict[str, Any]]) -> None:
    for status, answer in extra.items():
        responses.setdefault(status, {**answer, "content": _json(ERROR)})


def _one_shape(responses: dict[str, Any]) -> None:
    """Give every declared error the shared shape: FastAPI's own 422 schema and bare descriptions are not it."""
    for status, answer in responses.items():
        if status[:1] not in ("4", "5"):
            continue
        content = answer.setdefault("content", {})
        if content and "application/json" not in content:
            continue  # a protocol's own error body (the OTLP receiver's protobuf Status)
        schema = content.get("application/json", {}).get("schema")
        if status == "422":
            content["application/json"] = {"schema": dict(INVALID)}
        elif not schema:
            content["application/json"] = {"schema": dict(ERROR)}


#: How a key is sent (producers/auth): either scheme is accepted.
SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer <API key>"},
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key", "description": "the API key itself"},
}


def _keyed(operation: dict[str, Any], family: str) -> None:
    """Declare the key a route needs (AGL_AUTH=keys): its scope, and the 401 and 403 answers."""
    operation["security"] = [{"bearer": []}, {"apiKey": []}]
    operation["x-agl-scope"] = family
    _add(
        operation["responses"],
        {
            "401": {"description": "no API key, or one that is unknown or revoked", "headers": _AUTHENTICATE},
            "403": {"description": f"the API key has neither the {family!r} nor the 'admin' scope"},
        },
    )


_AUTHENTICATE = {"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}}


def document_error_answers(app: FastAPI, *, keys: bool = False) -> None:
    """Add the statuses every route shares to the OpenAPI document, each with the shared error shape; with
    ``keys`` (AGL_AUTH=keys), the key each route needs too."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        # A copy: FastAPI's document shares dicts with the routes (module-level routers, shared by every app in
        # the process), so editing it in place would leak one app's answers into another's.
        document = app.openapi_schema = copy.deepcopy(build())
        for path, operations in document.get("paths", {}).items():
            for method, operation in operations.items():
                responses = operation.setdefault("responses", {})
                family = route_family(method, path)
                if keys and family != "health":
                    _keyed(operation, family)  # the key is checked before any route, the OTLP receiver's too
                if path.startswith("/v1/traces"):
                    continue  # the OTLP receiver documents its other answers in its own protocol
                _one_shape(responses)
                _add(responses, EVERY_ROUTE)
                if family != "health":
                    _add(responses, LIMITED_ROUTE)
                if "requestBody" in operation:
                    _add(responses, BODY_ROUTE)
                if any(p.get("name", "").lower() == "idempotency-key" for p in operation.get("parameters", [])):
                    _add(responses, KEYED_ROUTE)
        if keys:
            document.setdefault("components", {}).setdefault("securitySchemes", {}).update(SECURITY_SCHEMES)
        # FastAPI's own 422 schema is referenced no more (the answer is InvalidAnswer): drop it from the document.
        schemas = document.get("components", {}).get("schemas", {})
        if schemas.get("HTTPValidationError", {}).get("title") == "HTTPValidationError":
            schemas.pop("HTTPValidationError")
            if '"#/components/schemas/ValidationError"' not in json.dumps(document):
                schemas.pop("ValidationError", None)
        return document

    app.openapi = openapi  # type: ignore[method-assign]
