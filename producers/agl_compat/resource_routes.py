"""v0.3 resources: add and update (new versions, through our ``POST /v1/resources``), get, latest, list.

A write waits (briefly) until the resources read model shows the new version, so a runner that asks for it right
after finds it. An LLM's ``api_key`` is not recorded (the log is kept forever): runners read keys from their
environment, and answers carry ``api_key: null``.
"""

from __future__ import annotations

import contextlib
import time
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from producers import commands
from producers.agl_compat import paging, reads
from producers.agl_compat.convert import resource_in, resource_out
from producers.agl_compat.deps import RESPONSES, Services, services
from producers.agl_compat.models import Page, ResourcesUpdate
from producers.models import ResourcesIn
from projections import resources as resources_model
from projections.errors import ProjectionError
from projections.routes.waiting import wait_after

router = APIRouter(prefix="/v1/agl", tags=["agent-lightning v0.3"], responses=RESPONSES)
ServicesDep = Annotated[Services, Depends(services)]
#: How long a write waits for the read model to show it before answering anyway.
VISIBLE_WAIT_MS = 5000


async def publish(request: Request, svc: Services, named: dict[str, Any], resources_id: str | None) -> ResourcesUpdate:
    """Publish a new version of ``resources_id`` (a new id when ``None``) and answer it as theirs."""
    try:
        body = ResourcesIn(resources_id=resources_id, resources={k: resource_in(v) for k, v in named.items()})
    except ValidationError as e:
        raise RequestValidationError(e.errors()) from e
    accepted = await commands.publish_resources(
        body, publisher=svc.publisher, pool=svc.pool, relay=svc.relay, envelope=svc.envelope
    )
    # No resources model running, or one that is behind: the version is on the log all the same.
    with contextlib.suppress(ProjectionError):
        await wait_after(request, resources_model.PROJECTION, accepted.position, VISIBLE_WAIT_MS)
    now = time.time()
    return ResourcesUpdate(
        resources_id=accepted.resources_id,
        create_time=now,
        update_time=now,
        version=accepted.resources_version,
        resources={name: resource_out(r.model_dump(mode="json")) for name, r in body.resources.items()},
    )


@router.post("/resources", status_code=201, response_model=ResourcesUpdate)
async def add_resources(
    request: Request, named: Annotated[dict[str, dict[str, Any]], Body()], svc: ServicesDep
) -> ResourcesUpdate:
    """A new resources id with version 1 (the body is the bare name -> resource mapping, as theirs)."""
    return await publish(request, svc, named, None)


@router.post("/resources/{resources_id}", response_model=ResourcesUpdate)
async def update_resources(
    resources_id: str, request: Request, named: Annotated[dict[str, dict[str, Any]], Body()], svc: ServicesDep
) -> ResourcesUpdate:
    """The next version of ``resources_id``."""
    return await publish(request, svc, named, resources_id)


@router.get("/resources", response_model=Page)
async def query_resources(request: Request, svc: ServicesDep) -> Page:
    body: dict[str, Any] = dict(request.query_params)
    for key in ("limit", "offset"):
        if key in body and body[key].lstrip("-").isdigit():
            body[key] = int(body[key])
    limit, offset, sort_by, order = paging.validate(body, ResourcesUpdate)
    found = await reads.all_resources(svc.pool)
    wanted, contains = body.get("resources_id"), body.get("resources_id_contains")
    kept = [
        r
        for r in found
        if (wanted is None or r.resources_id == wanted) and (contains is None or contains in r.resources_id)
    ]
    return paging.page(kept, limit, offset, sort_by, order)


@router.get("/resources/latest", response_model=ResourcesUpdate | None)
async def latest_resources(svc: ServicesDep) -> ResourcesUpdate | None:
    return await reads.resources(svc.pool, None)


@router.get("/resources/{resources_id}", response_model=ResourcesUpdate | None)
async def get_resources(resources_id: str, svc: ServicesDep) -> ResourcesUpdate | None:
    """The newest version of ``resources_id``; ``null`` when unknown."""
    return await reads.resources(svc.pool, resources_id)
