"""Stacks started by a test are stopped after it, whatever its outcome."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.stack.test_cli import Up


@pytest.fixture(autouse=True)
def _no_stack_left_behind() -> Iterator[None]:
    yield
    while Up.started:
        Up.started.pop().stop()
