"""Where projections are found: the built-in ones, ``register()`` in code, and the ``agl.projections`` entry points.

A package makes its own read model known by declaring, in its ``pyproject.toml``::

    [project.entry-points."agl.projections"]
    my_model = "my_package.my_module:PROJECTION"

Knowing a projection is not running it: ``agl up`` runs the built-in ones and those attached with
``agl projections attach module:object`` (registered in PostgreSQL, see ``projections.attached``).
"""

from __future__ import annotations

import importlib
import sys
from importlib.metadata import entry_points

from projections.base import Projection
from projections.errors import ProjectionDefinitionError, UnknownProjection

ENTRY_POINT_GROUP = "agl.projections"
#: Built-in projections, as ``module:object`` references (imported lazily).
BUILTIN = (
    "projections.rollouts:PROJECTION",
    "projections.archive:PROJECTION",
    "projections.resources:PROJECTION",
    "projections.workers:PROJECTION",
    "projections.knowledge:PROJECTION",
    "projections.knowledge_memory:PROJECTION",
    "projections.spans:PROJECTION",
    "projections.triplets:PROJECTION",
    "projections.router:PROJECTION",
)

_registered: dict[str, Projection] = {}


def register(projection: Projection) -> Projection:
    """Make ``projection`` known by name (the last registration of a name wins)."""
    _registered[projection.name] = projection
    return projection


def load_object(reference: str) -> Projection:
    """Import ``module:object`` and check it is a :class:`Projection`."""
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise ProjectionDefinitionError(f"{reference!r} is not module:object")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ProjectionDefinitionError(f"cannot import {module_name}: {e}") from e
    obj = getattr(module, attribute, None)
    if not isinstance(obj, Projection):
        raise ProjectionDefinitionError(f"{reference} is {type(obj).__name__}, not a Projection")
    return obj


def load_attached(reference: str, python_path: str | None = None) -> Projection:
    """Import an attached projection, from ``python_path`` when its module is not installed."""
    if python_path and python_path not in sys.path:
        sys.path.insert(0, python_path)
    return load_object(reference)


def builtin_names() -> frozenset[str]:
    """Names of the projections that ship with the project (they cannot be attached or detached)."""
    return frozenset(load_object(reference).name for reference in BUILTIN)


def all_projections() -> dict[str, Projection]:
    """Built-ins, then entry points, then those registered in code."""
    found: dict[str, Projection] = {}
    for reference in BUILTIN:
        projection = load_object(reference)
        found[projection.name] = projection
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        projection = load_object(entry.value)
        found[projection.name] = projection
    found.update(_registered)
    return found


def get(name_or_reference: str) -> Projection:
    """A projection by name, or by ``module:object``."""
    if ":" in name_or_reference:
        return load_object(name_or_reference)
    projection = all_projections().get(name_or_reference)
    if projection is None:
        known = ", ".join(sorted(all_projections())) or "none"
        raise UnknownProjection(f"no projection named {name_or_reference!r} (known: {known})")
    return projection
