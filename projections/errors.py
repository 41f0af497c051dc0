"""Errors of read-model logic and of the projection registry."""

from __future__ import annotations

from core.errors import LightningError


class ProjectionError(LightningError):
    """Base of the projection errors."""


class ProjectionDefinitionError(ProjectionError):
    """A projection is declared wrongly (bad name, no topics...)."""

    exit_code = 2


class UnknownProjection(ProjectionError):
    """No projection of that name is registered (in code or through the ``agl.projections`` entry points)."""

    exit_code = 2


class ProjectionNotReady(ProjectionError):
    """A read waited for a position the projection has not applied yet; asking again later may succeed."""

    retriable = True


class RebuildConflict(ProjectionError):
    """A rebuild cannot start or finish in the current state (another build runs, nothing to switch to...)."""
