"""v0.3's pagination rules (``limit`` -1 = all, ``sort_by`` a field of the model, ``and``/``or`` filters), and
sorting and slicing of the matches they leave."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import HTTPException

from producers.agl_compat.models import Page

if TYPE_CHECKING:
    from collections.abc import Sequence

    from pydantic import BaseModel


def validate(body: dict[str, Any], model: type[BaseModel]) -> tuple[int, int, str | None, str]:
    """``(limit, offset, sort_by, sort_order)`` of a search body; 400 with their wording when one is invalid."""
    sort_by = body.get("sort_by")
    sort_order = body.get("sort_order", "asc")
    limit = body.get("limit", -1)
    offset = body.get("offset", 0)
    if sort_by is not None and sort_by not in model.model_fields:
        allowed = ", ".join(model.model_fields)
        raise HTTPException(400, f"Invalid sort_by: {sort_by}, allowed fields are: {allowed}")
    if sort_order not in ("asc", "desc"):
        raise HTTPException(400, f"Invalid sort_order: {sort_order}, allowed values are: asc, desc")
    if not isinstance(limit, int) or limit == 0 or limit < -1:
        raise HTTPException(400, "Limit must be greater than 0 or -1 for no limit")
    if not isinstance(offset, int) or offset < 0:
        raise HTTPException(400, "Offset must be greater than or equal to 0")
    logic = body.get("filter_logic", "and")
    if logic not in ("and", "or"):
        raise HTTPException(400, f"Invalid filter_logic: {logic}, allowed values are: and, or")
    return limit, offset, sort_by, sort_order


def page(items: Sequence[BaseModel], limit: int, offset: int, sort_by: str | None, sort_order: str) -> Page:
    """Sort (``None`` values last), slice and count."""
    ordered = list(items)
    if sort_by is not None:
        present = [i for i in ordered if getattr(i, sort_by) is not None]
        absent = [i for i in ordered if getattr(i, sort_by) is None]
        present.sort(key=lambda i: _key(getattr(i, sort_by)), reverse=sort_order == "desc")
        ordered = present + absent
    chosen = ordered[offset:] if limit == -1 else ordered[offset : offset + limit]
    return Page(items=chosen, limit=limit, offset=offset, total=len(ordered))


def _key(value: Any) -> Any:
    # Mixed types (any JSON input) sort by their text, so a sort never fails on them.
    return value if isinstance(value, int | float | str) else str(value)


def matches(values: dict[str, bool], logic: str) -> bool:
    """Whether an item passes the filters that were given (``values``: filter name -> passed)."""
    if not values:
        return True
    return all(values.values()) if logic == "and" else any(values.values())
