"""``agl api``: what the serving process does before it serves."""

from __future__ import annotations

import argparse
import gc
from typing import Any

import uvicorn

import agl.app
import agl.observability.logs
from agl.commands import api


def test_the_objects_of_the_start_are_frozen_before_serving(monkeypatch):
    seen: dict[str, Any] = {}
    app = object()

    def serve(served: object, **_: Any) -> None:
        seen["app"], seen["frozen"] = served, gc.get_freeze_count()

    monkeypatch.setattr(agl.app, "create_app", lambda settings: app)
    monkeypatch.setattr(uvicorn, "run", serve)
    monkeypatch.setattr(agl.observability.logs, "configure_logging", lambda *_: None)  # the process's, not pytest's
    monkeypatch.setenv("AGL_DATABASE_URL", "postgresql://nowhere/agl")
    monkeypatch.setenv("AGL_KAFKA_BOOTSTRAP", "127.0.0.1:9")
    gc.unfreeze()
    try:
        assert api.run(argparse.Namespace()) == 0
        # Every object alive at the start (this test's among them) is in the permanent generation: full
        # collections while serving never scan them.
        assert seen["app"] is app and seen["frozen"] > 10_000
    finally:
        gc.unfreeze()
