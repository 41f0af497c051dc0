"""``GET /v1/resources``, ``/v1/resources/latest`` and ``/v1/resources/{resources_id}``: the resources read model."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Request
from pydantic import BaseModel

from projections.reading import READ_RESPONSES, not_found, reading
from projections.resources import PROJECTION, ResourcesVersion, get_resources, latest_resources, list_resources
from projections.routes.waiting import AfterQuery, WaitQuery, wait_after
from schemas.bounds import BIGINT_MAX, INT4_MAX, MAX_ID_LENGTH
from schemas.resources import Resource

router = APIRouter(prefix="/v1/resources", tags=["resources"], responses=READ_RESPONSES)


class ResourcesOut(BaseModel):
    resources_id: str
    resources_version: int
    resources: dict[str, Resource]
    created_at: datetime


class ResourcesSummaryOut(BaseModel):
    resources_id: str
    latest_version: int
    versions: int
    names: list[str]
    created_at: datetime
    updated_at: datetime


class ResourcesPage(BaseModel):
    items: list[ResourcesSummaryOut]
    total: int
    limit: int
    offset: int


def _out(found: ResourcesVersion | None, what: str) -> ResourcesOut:
    if found is None:
        raise HTTPException(404, f"no resources {what}")
    return ResourcesOut.model_validate(vars(found))


@router.get("", response_model=ResourcesPage)
async def list_route(
    request: Request,
    *,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=BIGINT_MAX)] = 0,
    after: AfterQuery = None,
    wait_ms: WaitQuery = 5000,
) -> ResourcesPage:
    """Every resources_id with its latest version, its names, when it was first and last published."""
    await wait_after(request, PROJECTION, after, wait_ms)
    async with request.app.state.pool.connection() as conn, reading(conn, PROJECTION):
        rows, total = await list_resources(conn, limit=limit, offset=offset)
    items = [ResourcesSummaryOut.model_validate(vars(r)) for r in rows]
    return ResourcesPage(items=items, total=total, limit=limit, offset=offset)


# Declared before /{resources_id}: "latest" is a route of its own, not an id.
@router.get("/latest", response_model=ResourcesOut, responses=not_found("resources (none published yet)"))
async def latest_route(request: Request, *, after: AfterQuery = None, wait_ms: WaitQuery = 5000) -> ResourcesOut:
    """The most recently published version of any id (greatest occurred_at, then resources_id, then version)."""
    await wait_after(request, PROJECTION, after, wait_ms)
    async with request.app.state.pool.connection() as conn, reading(conn, PROJECTION):
        found = await latest_resources(conn)
    return _out(found, "published yet")


@router.get("/{resources_id}", response_model=ResourcesOut, responses=not_found("resources id or version"))
async def get_route(
    request: Request,
    resources_id: Annotated[str, Path(min_length=1, max_length=MAX_ID_LENGTH)],
    *,
    version: Annotated[int | None, Query(ge=1, le=INT4_MAX, description="a version; the highest when absent")] = None,
    after: AfterQuery = None,
    wait_ms: WaitQuery = 5000,
) -> ResourcesOut:
    """The highest version of ``resources_id``, or the one asked for by ``?version=``."""
    await wait_after(request, PROJECTION, after, wait_ms)
    async with request.app.state.pool.connection() as conn, reading(conn, PROJECTION):
        found = await get_resources(conn, resources_id, version)
    return _out(found, f"{resources_id!r}" + ("" if version is None else f" version {version}"))
