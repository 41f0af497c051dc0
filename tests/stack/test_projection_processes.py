"""How `agl up` lays the built-in projections out in processes (``AGL_PROJECTION_PROCESSES``)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from agl.config import Settings
from agl.stack.projection_processes import PROJECTION_WORKERS, projection_processes, projection_service_name


def test_shared_runs_rollouts_alone_and_every_other_projection_together() -> None:
    assert Settings().projection_processes == "shared"
    rollouts, others = projection_processes("shared")
    assert rollouts == ("rollouts",)
    assert sorted(others) == sorted(n for n in PROJECTION_WORKERS if n != "rollouts")
    assert projection_service_name(rollouts) == "projection-rollouts"
    assert projection_service_name(others) == "projections-shared"


def test_separate_gives_each_projection_its_own_process() -> None:
    assert projection_processes("separate") == [(n,) for n in PROJECTION_WORKERS]
    assert Settings(projection_processes="separate").projection_processes == "separate"
    with pytest.raises(ValidationError):
        Settings(projection_processes="one")
