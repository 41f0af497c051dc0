"""``GET /v1/router``: the assignment router's read model, with each arm's posterior under the configured prior."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

from projections.reading import READ_RESPONSES, reading
from projections.router import PROJECTION, ArmRow, list_arms
from projections.routes.waiting import AfterQuery, WaitQuery, wait_after
from schemas.bounds import MAX_ID_LENGTH

router = APIRouter(prefix="/v1/router", tags=["router"], responses=READ_RESPONSES)


class ArmOut(BaseModel):
    task_kind: str
    agent_type: str
    #: rollouts the router gave this type
    assignments: int
    #: of those, rollouts with an outcome reward
    rewarded: int
    reward_sum: float
    mean_reward: float | None
    #: the Beta posterior's evidence: a reward r in [0, 1] is r successes and 1 - r failures
    successes: float
    failures: float
    posterior_mean: float


class RouterOut(BaseModel):
    policy: Literal["thompson", "off"]
    prior_alpha: float
    prior_beta: float
    arms: list[ArmOut]


def _out(arm: ArmRow, alpha: float, beta: float) -> ArmOut:
    return ArmOut(
        **vars(arm),
        mean_reward=arm.reward_sum / arm.rewarded if arm.rewarded else None,
        posterior_mean=(alpha + arm.successes) / (alpha + beta + arm.successes + arm.failures),
    )


@router.get("", response_model=RouterOut)
async def get_route(
    request: Request,
    *,
    task_kind: Annotated[str | None, Query(min_length=1, max_length=MAX_ID_LENGTH)] = None,
    after: AfterQuery = None,
    wait_ms: WaitQuery = 5000,
) -> RouterOut:
    """Every (task kind, agent type) the router has chosen, by kind then type (of one kind when given)."""
    settings = request.app.state.settings
    alpha, beta = settings.router_prior_alpha, settings.router_prior_beta
    await wait_after(request, PROJECTION, after, wait_ms)
    async with request.app.state.pool.connection() as conn, reading(conn, PROJECTION):
        arms = await list_arms(conn, task_kind)
    return RouterOut(
        policy=settings.router, prior_alpha=alpha, prior_beta=beta, arms=[_out(a, alpha, beta) for a in arms]
    )
