"""The rollouts projection as the next version of its code would declare it (same fold, version + 1)."""

from __future__ import annotations

from dataclasses import replace

from projections.rollouts import PROJECTION as ROLLOUTS

NEXT = replace(ROLLOUTS, version=ROLLOUTS.version + 1)
