"""Every error body has one shape: ``{"detail": "why"}``, or for 422 the failing fields and a one-line message;
and the OpenAPI document says so, every 4xx/5xx of every operation pointing to one of the two shared components."""

from __future__ import annotations

import json

import pytest

pytestmark = [pytest.mark.kafka, pytest.mark.pg]

JSON = {"content-type": "application/json"}


def assert_error_answer(answer, status: int) -> None:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/json"
    body = answer.json()
    assert set(body) == {"detail"} and isinstance(body["detail"], str) and body["detail"], body


async def test_errors_of_every_kind_have_the_shared_shape(api):
    assert_error_answer(await api.get("/v1/rollouts/ro-none"), 404)  # an entity the read model lacks
    assert_error_answer(await api.get("/v1/no-such-route"), 404)  # a route that does not exist
    assert_error_answer(await api.get("/v1/rollouts", params={"after": "not-a-token"}), 400)
    assert_error_answer(await api.post("/v1/agl/rollouts/ro-1/attempts"), 409)  # refused by this API's rules
    assert_error_answer(await api.post("/v1/rollouts", content=b"x" * 5000, headers=JSON), 413)
    assert_error_answer(await api.get("/v1/rollouts", params={"after": "t" * 17_000}), 414)
    # An Idempotency-Key reused for a different request.
    key = {**JSON, "Idempotency-Key": "k-1"}
    first = await api.post("/v1/rewards", content=json.dumps({"rollout_id": "ro-1", "value": 1}), headers=key)
    assert first.status_code == 202, first.text
    reused = await api.post("/v1/rewards", content=json.dumps({"rollout_id": "ro-1", "value": 0}), headers=key)
    assert_error_answer(reused, 409)
    # 422 from FastAPI's validation, from the input guard, and from routes that parse by hand: one shape.
    for method, url, body in [
        ("GET", "/v1/rollouts?limit=0", None),
        ("POST", "/v1/rollouts", b'{"input": "a\\u0000b"}'),
        ("POST", "/v1/resources", b'{"resources": {"p": {"resource_type": "llm", "endpoint": "e", "model": "m", '
         b'"sampling_parameters": {"t": 100000000000000000000}}}}'),
        ("GET", "/v1/knowledge/search?collection=c&query=q&filter=%7B", None),
        ("POST", "/v1/agl/spans/search", b"[1]"),
    ]:  # fmt: skip
        answer = await api.request(method, url, content=body, headers=JSON)
        assert answer.status_code == 422, (url, answer.text)
        invalid = answer.json()
        assert set(invalid) == {"detail", "message"} and invalid["detail"], (url, invalid)
        assert all(set(e) == {"type", "loc", "msg"} for e in invalid["detail"]), (url, invalid)
        assert invalid["message"].startswith(".".join(map(str, invalid["detail"][0]["loc"]))), (url, invalid)


async def test_the_document_gives_every_error_status_a_shared_shape(api):
    document = (await api.get("/openapi.json")).json()
    shared = {"#/components/schemas/ErrorAnswer", "#/components/schemas/InvalidAnswer"}
    assert {"ErrorAnswer", "InvalidAnswer"} <= set(document["components"]["schemas"])
    assert "HTTPValidationError" not in document["components"]["schemas"], "FastAPI's 422 shape is not ours"
    checked = 0
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            if path != "/v1/traces":  # OTLP answers in its own protocol's Status
                assert "414" in responses, (method, path)
            for status, answer in responses.items():
                schema = answer.get("content", {}).get("application/json", {}).get("schema", {})
                if status[0] in "45" and schema.get("$ref") != "#/components/schemas/OtlpStatus":
                    expected = "#/components/schemas/InvalidAnswer" if status == "422" else shared
                    assert schema.get("$ref") in ({expected} if isinstance(expected, str) else expected), (
                        method, path, status, schema,
                    )  # fmt: skip
                    checked += 1
    assert checked > 300
    keyed = document["paths"]["/v1/rewards"]["post"]["responses"]
    assert {"409", "413", "429"} <= set(keyed)
    assert "429" not in document["paths"]["/healthz"]["get"]["responses"], "probes are never rate limited"
