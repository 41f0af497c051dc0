"""``GET /dashboard``: the page (HTML, vanilla JS, an inline SVG chart). It polls the read routes and
``/metrics`` itself, so it needs no build step and no route of its own beyond this one."""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter(tags=["dashboard"])


@cache
def page() -> str:
    return files("agl.dashboard").joinpath("static/index.html").read_text(encoding="utf-8")


@router.get("/dashboard", response_class=HTMLResponse, include_in_schema=False)
async def dashboard() -> HTMLResponse:
    # no-cache: a new release of the page is picked up on the next load.
    return HTMLResponse(page(), headers={"Cache-Control": "no-cache"})
