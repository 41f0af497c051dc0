"""Which processes run the built-in projections under ``agl up`` (``AGL_PROJECTION_PROCESSES``).

``shared`` (the default): the projections in :data:`OWN_PROCESS_PROJECTIONS` run in processes of their own, the
other built-in ones together in one (``agl projections run a b c``, see ``consumers.runner.run_projections``):
each keeps its own worker, and they share an interpreter and an event loop. ``separate``: one process each.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

#: Projections `agl up` keeps up to date.
PROJECTION_WORKERS = (
    "rollouts", "archive", "resources", "workers", "spans", "triplets", "knowledge", "memories", "router",
)  # fmt: skip
#: Alone in their process in ``shared`` mode: the rollouts read model is the one users wait on to the millisecond.
OWN_PROCESS_PROJECTIONS = ("rollouts",)
#: The command every projection process runs after the interpreter (``python -m agl projections run <names>``);
#: agl/stack/stack.py writes it out in full, where tests/infra/test_deploy.py reads the services `agl up` starts.
_COMMAND = ["-m", "agl", "projections", "run"]


def projection_processes(mode: str) -> list[tuple[str, ...]]:
    """The built-in projections grouped by the process that runs them under ``agl up``."""
    if mode == "separate":
        return [(name,) for name in PROJECTION_WORKERS]
    alone = [(name,) for name in PROJECTION_WORKERS if name in OWN_PROCESS_PROJECTIONS]
    return [*alone, tuple(name for name in PROJECTION_WORKERS if name not in OWN_PROCESS_PROJECTIONS)]


def projection_service_name(names: tuple[str, ...]) -> str:
    return f"projection-{names[0]}" if len(names) == 1 else "projections-shared"


def runs_projection(argv: Sequence[str], name: str) -> bool:
    """Whether the service started with ``argv`` runs projection ``name`` (alone or with others)."""
    argv = list(argv)
    return argv[1:5] == _COMMAND and name in argv[5:]
