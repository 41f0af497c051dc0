"""Schemathesis against the API's own OpenAPI document, on the real stack (Kafka, PostgreSQL): no answer is a
server error, and every answer has a documented status, content type, headers and body shape.

Every operation of the document is fuzzed with the same budget (``EXAMPLES_PER_OPERATION`` cases, valid and
invalid data mixed). The cases are drawn by hypothesis from schemathesis' strategies rather than through
``@schema.parametrize()``: the lazy (fixture-based) parametrization reads a pytest attribute that pytest 9.2
no longer has, and one loop also lets the test report every failing operation at once, not only the first.
"""

from __future__ import annotations

from typing import Any

import hypothesis
import pytest
from hypothesis import strategies as st
from schemathesis import GenerationMode, checks

from tests.api.conftest import EXAMPLES_PER_OPERATION

pytestmark = [pytest.mark.kafka, pytest.mark.pg]

#: Server errors are checked by ``no_server_error`` below instead of ``checks.not_a_server_error``.
CHECKS = [
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.response_headers_conformance,
]

#: Fields that make a route wait when nothing happens (long-polls), with the longest wait a case may ask for.
#: These operations are fuzzed like the others; only how long they may block is cut, so that 25 cases of a 30 s
#: long-poll do not turn the run into minutes. (The agl v0.3 wait's ``timeout`` means 25 s when absent.)
#: A failure's report is cut to this (a fuzzed query string alone can be 8 KiB).
MAX_REPORT_CHARS = 1500

WAIT_FIELDS: dict[str, float] = {"wait_ms": 50, "timeout_s": 0.05, "timeout": 0.05}
WAITING_BODIES = {("POST", "/v1/rollouts/dequeue"), ("POST", "/v1/rollouts/wait"), ("POST", "/v1/agl/waits/rollouts")}


def bound_waits(case: Any) -> None:
    if isinstance(case.query, dict) and isinstance(case.query.get("wait_ms"), int):
        case.query["wait_ms"] = min(case.query["wait_ms"], int(WAIT_FIELDS["wait_ms"]))
    if (case.method.upper(), case.path) in WAITING_BODIES and isinstance(case.body, dict):
        for field, cap in WAIT_FIELDS.items():
            value = case.body.get(field)
            if field == "timeout" and value is None:
                case.body[field] = cap
            elif isinstance(value, int | float) and not isinstance(value, bool) and value > cap:
                case.body[field] = type(value)(cap)


def no_server_error(operation: Any, status: int) -> None:
    """No 5xx, except a 501 the operation documents: the OTLP signals Agent Lightning's receiver does not serve
    either (metrics, logs, profiles) answer 501 as it does, which an exporter does not retry."""
    documented_501 = "501" in operation.definition.raw.get("responses", {})
    assert status < 500 or (status == 501 and documented_501), f"{operation.label} answered {status}"


def fuzz(operation: Any) -> int:
    """Run the operation's cases; the number run. Raises the first failing case's checks (not shrunk)."""
    cases = st.one_of(operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE))
    ran = 0

    @hypothesis.settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        derandomize=True,
        # No shrinking: the first failing case is reported as drawn, which is clear enough and keeps runs short.
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    @hypothesis.given(case=cases)
    def run(case: Any) -> None:
        nonlocal ran
        ran += 1
        bound_waits(case)
        response = case.call_and_validate(checks=CHECKS)
        no_server_error(operation, response.status_code)

    run()
    return ran


def test_no_server_errors_and_every_answer_as_documented(api_schema):
    operations = [result.ok() for result in api_schema.get_all_operations()]
    failures: dict[str, str] = {}
    examples = 0
    for operation in operations:
        try:
            examples += fuzz(operation)
        except (Exception, BaseExceptionGroup) as e:  # noqa: BLE001 - every failing operation is reported at once
            failures[operation.label] = f"{type(e).__name__}: {e}"[:MAX_REPORT_CHARS]
    print(f"fuzzed {len(operations)} operations, {examples} examples, {len(failures)} failing")
    assert len(operations) >= 80, "the document lost operations"
    assert not failures, "\n\n".join(f"{label}\n{text}" for label, text in failures.items())
