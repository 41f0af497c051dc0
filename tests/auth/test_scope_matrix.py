"""Every operation of the API's OpenAPI document (and /metrics), with no key, with a key of each scope and with
the right one: 401 without a key, 403 with a key of another scope, neither with the route's scope or admin.
0 cross-scope access. Health routes need no key; the dashboard page loads without one (it holds no data)."""

from __future__ import annotations

import re

import httpx
import pytest

from producers.auth.scopes import SCOPES
from producers.route_families import route_family
from tests.auth.conftest import KeyedApi

pytestmark = [pytest.mark.pg, pytest.mark.kafka, pytest.mark.slow]

#: What a route's own answer may take at most (a long poll, a stream): a refusal comes at once, before the body.
HANDLER_TIMEOUT_S = 15.0
#: Not in the OpenAPI document, served anyway.
EXTRA_OPERATIONS = [("GET", "/metrics"), ("GET", "/v1/no-such-route"), ("POST", "/v1/no-such-route")]


def operations(api: KeyedApi) -> list[tuple[str, str]]:
    """(method, concrete path) of each documented operation, path parameters filled in."""
    doc = api.app.openapi()
    found = [
        (method.upper(), re.sub(r"\{[^}]+\}", "p-1", path))
        for path, item in doc["paths"].items()
        for method in item
        if method in ("get", "post", "put", "patch", "delete")
    ]
    return found + EXTRA_OPERATIONS


async def status_of(http: httpx.AsyncClient, method: str, path: str, key: str | None) -> int | None:
    """The answer's status; None when the route's handler took longer than HANDLER_TIMEOUT_S (so it was let in)."""
    headers = {"content-type": "application/json"} | ({"authorization": f"Bearer {key}"} if key else {})
    # A body that is not JSON: a route that got past the check answers fast (422 or 400) and changes nothing.
    content = b"{" if method != "GET" else None
    try:
        answer = await http.request(method, path, headers=headers, content=content, timeout=HANDLER_TIMEOUT_S)
    except httpx.TimeoutException:
        return None
    return answer.status_code


async def test_every_operation_needs_a_key_of_its_scope(api_with_keys: KeyedApi):
    api = api_with_keys
    ops = operations(api)
    assert len(ops) > 60, "the OpenAPI document lost its operations"
    wrong: list[str] = []
    cross_scope_access = 0
    checked = 0
    async with httpx.AsyncClient(base_url=api.url) as http:
        for method, path in ops:
            family = route_family(method, path)
            if family == "health":
                status = await status_of(http, method, path, None)
                if status in (401, 403):
                    wrong.append(f"{method} {path}: health answered {status} without a key")
                continue
            status = await status_of(http, method, path, None)
            if status != 401:
                wrong.append(f"{method} {path} ({family}): {status} without a key, not 401")
            for scope in SCOPES:
                status = await status_of(http, method, path, api.keys[scope].key)
                checked += 1
                if scope in (family, "admin"):
                    if status in (401, 403):
                        wrong.append(f"{method} {path} ({family}): {status} with a {scope!r} key")
                elif status != 403:
                    cross_scope_access += 1
                    wrong.append(f"{method} {path} ({family}): {status} with a {scope!r} key, not 403")
    assert cross_scope_access == 0
    assert wrong == []
    assert checked >= 6 * 60


async def test_refusals_have_the_api_error_shape(api_with_keys: KeyedApi):
    async with httpx.AsyncClient(base_url=api_with_keys.url) as http:
        missing = await http.get("/v1/rollouts")
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == "Bearer"
        assert "API key is required" in missing.json()["detail"]
        forged = await http.get("/v1/rollouts", headers={"authorization": "Bearer agl_0123456789abcdef_" + "A" * 43})
        assert forged.status_code == 401 and "unknown or revoked" in forged.json()["detail"]
        garbage = await http.get("/v1/rollouts", headers={"x-api-key": "not-a-key"})
        assert garbage.status_code == 401
        read_key = api_with_keys.keys["read"].key
        denied = await http.post("/v1/rollouts", json={"input": {}}, headers={"x-api-key": read_key})
        assert denied.status_code == 403
        assert set(denied.json()) == {"detail"} and "'publish'" in denied.json()["detail"]
        # X-API-Key and Bearer are both accepted (the read model is not projected here: 503 is its own answer).
        assert (await http.get("/v1/rollouts", headers={"x-api-key": read_key})).status_code not in (401, 403)
        bearer = await http.get("/v1/rollouts", headers={"authorization": f"bearer {read_key}"})
        assert bearer.status_code not in (401, 403)


async def test_health_needs_no_key_and_the_dashboard_page_asks_for_one(api_with_keys: KeyedApi):
    async with httpx.AsyncClient(base_url=api_with_keys.url) as http:
        for path in ("/healthz", "/readyz", "/v1/agl/health"):
            assert (await http.get(path)).status_code in (200, 503), path
        page = await http.get("/dashboard")
        assert page.status_code == 200 and "key-form" in page.text  # the page itself holds no data
        assert (await http.get("/metrics")).status_code == 401
        assert (await http.get("/v1/projections")).status_code == 401
        assert (await http.get("/docs")).status_code == 401


def test_the_document_says_which_key_each_route_needs() -> None:
    from agl.app import create_app
    from tests.producers.conftest import api_settings

    keyed = create_app(api_settings("127.0.0.1:9", "postgresql://nobody@127.0.0.1:9/none", "", auth="keys")).openapi()
    assert set(keyed["components"]["securitySchemes"]) == {"bearer", "apiKey"}
    checked = 0
    for path, item in keyed["paths"].items():
        for method, operation in item.items():
            family = route_family(method, path)
            if family == "health":
                assert "security" not in operation and "401" not in operation["responses"], (method, path)
                continue
            assert operation["x-agl-scope"] == family, (method, path)
            assert operation["security"] == [{"bearer": []}, {"apiKey": []}], (method, path)
            assert {"401", "403"} <= set(operation["responses"]), (method, path)
            checked += 1
    assert checked > 70
    # With AGL_AUTH=off nothing is asked, and the document does not pretend otherwise.
    open_doc = create_app(api_settings("127.0.0.1:9", "postgresql://nobody@127.0.0.1:9/none", "", auth="off")).openapi()
    assert "securitySchemes" not in open_doc.get("components", {})
    operations = [op for item in open_doc["paths"].values() for op in item.values() if isinstance(op, dict)]
    assert operations and not any("security" in op or "x-agl-scope" in op for op in operations)
