"""Structured logs: the JSON line shape, and the correlation id of the request in each line and event."""

from __future__ import annotations

import json
import logging

import pytest

from agl.observability.logs import configure_logging, correlation_id
from schemas.position import parse_token
from tests.producers.test_commands_api import events_on

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture
def restored_root_logger():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


def test_a_json_line_carries_level_logger_message_correlation_id_and_extras(restored_root_logger, capsys):
    configure_logging("json", "info")
    token = correlation_id.set("req-42")
    try:
        logging.getLogger("agl.test").info("rollout %s queued", "ro-1", extra={"rollout_id": "ro-1"})
    finally:
        correlation_id.reset(token)
    logging.getLogger("agl.test").debug("below the level: not written")
    (line,) = capsys.readouterr().err.splitlines()
    entry = json.loads(line)
    assert set(entry) == {"time", "level", "logger", "message", "correlation_id", "rollout_id"}
    assert (entry["level"], entry["logger"], entry["message"]) == ("INFO", "agl.test", "rollout ro-1 queued")
    assert (entry["correlation_id"], entry["rollout_id"]) == ("req-42", "ro-1")
    assert entry["time"].endswith("+00:00")


def test_a_json_line_carries_the_exception(restored_root_logger, capsys):
    configure_logging("json")
    try:
        int("boom")
    except ValueError:
        logging.getLogger("agl.test").exception("failed")
    entry = json.loads(capsys.readouterr().err)
    assert entry["correlation_id"] is None and "ValueError: invalid literal" in entry["exception"]


def test_text_lines_carry_the_correlation_id_too(restored_root_logger, capsys):
    configure_logging("text")
    token = correlation_id.set("req-7")
    try:
        logging.getLogger("agl.test").warning("slow")
    finally:
        correlation_id.reset(token)
    assert capsys.readouterr().err.rstrip().endswith("WARNING agl.test [req-7]: slow")


@pytest.mark.pg
@pytest.mark.kafka
async def test_a_traced_request_gives_its_events_the_trace_id_as_correlation_id(api, kafka_bootstrap, kafka_topics):
    traceparent = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
    answer = await api.post("/v1/rollouts", json={"input": 1}, headers={"traceparent": traceparent})
    assert answer.status_code == 202, answer.text
    given = await api.post("/v1/rollouts", json={"input": 2}, headers={"traceparent": traceparent,
                                                                      "X-Correlation-ID": "mine"})  # fmt: skip
    assert given.status_code == 202, given.text
    plain = await api.post("/v1/rollouts", json={"input": 3})
    assert plain.status_code == 202, plain.text
    (position,) = parse_token(answer.json()["position"])
    topic = position.topic
    events = await events_on(kafka_bootstrap, topic, 3)
    assert {e.input: e.correlation_id for e in events} == {1: TRACE_ID, 2: "mine", 3: None}
