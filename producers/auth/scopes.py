"""Scopes are the route families of ``producers/route_families.py``: a key may call the routes of its scopes.

``admin`` may call everything; ``health`` routes need no key at all (a probe must never be locked out).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, get_args

from schemas import ApiKeyScope

if TYPE_CHECKING:
    from collections.abc import Iterable

    from producers.route_families import Family

SCOPES: tuple[ApiKeyScope, ...] = get_args(ApiKeyScope)


def allows(scopes: Iterable[str], family: Family) -> bool:
    """Whether a key with ``scopes`` may call a route of ``family``."""
    granted = set(scopes)
    return family == "health" or "admin" in granted or family in granted
