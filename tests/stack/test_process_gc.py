"""What the serving processes (``agl api``, ``agl runner``) do to the garbage collector before they serve."""

from __future__ import annotations

import argparse
import gc
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

import agl.app
import agl.observability.logs
from agl.commands import api, runner
from agl.commands.process_gc import YOUNG_COLLECTION_EVERY


@pytest.fixture
def collector(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The test process's collector as it was, afterwards: nothing frozen, the default thresholds."""
    thresholds = gc.get_threshold()
    gc.unfreeze()
    monkeypatch.setenv("AGL_DATABASE_URL", "postgresql://nowhere/agl")
    monkeypatch.setenv("AGL_KAFKA_BOOTSTRAP", "127.0.0.1:9")
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def collector_state() -> dict[str, Any]:
    return {"frozen": gc.get_freeze_count(), "young_threshold": gc.get_threshold()[0]}


def test_the_api_freezes_its_start_and_collects_the_young_less_often_before_serving(collector, monkeypatch):
    seen: dict[str, Any] = {}
    app = object()

    def serve(served: object, **_: Any) -> None:
        seen.update(app=served, **collector_state())

    monkeypatch.setattr(agl.app, "create_app", lambda settings: app)
    monkeypatch.setattr(uvicorn, "run", serve)
    monkeypatch.setattr(agl.observability.logs, "configure_logging", lambda *_: None)  # the process's, not pytest's
    assert api.run(argparse.Namespace()) == 0
    # Every object alive at the start (this test's among them) is in the permanent generation: full collections
    # while serving never scan them.
    assert seen["app"] is app and seen["frozen"] > 10_000
    assert seen["young_threshold"] == YOUNG_COLLECTION_EVERY > 700


def test_a_runner_freezes_its_start_and_its_agent_before_it_claims(collector, monkeypatch):
    seen: dict[str, Any] = {}

    async def serve(agent: Any, url: str, options: Any) -> int:
        # The permanent generation is not among the generations get_objects lists.
        unfrozen = any(o is agent for o in gc.get_objects())
        seen.update(agent=agent, unfrozen=unfrozen, url=url, slots=options.slots, **collector_state())
        return 0

    monkeypatch.setattr(runner, "_serve", serve)
    args = argparse.Namespace(
        agent="tests.runner.agents:slow", slots=3, capabilities="", worker_id=None, max_rollouts=None,
        idle_exit=None, heartbeat=5.0, drain_grace=30.0, api="http://127.0.0.1:9",
    )  # fmt: skip
    assert runner.run(args) == 0
    assert seen["url"] == "http://127.0.0.1:9" and seen["slots"] == 3
    assert gc.is_tracked(seen["agent"]) and not seen["unfrozen"] and seen["frozen"] > 10_000
    assert seen["young_threshold"] == YOUNG_COLLECTION_EVERY
