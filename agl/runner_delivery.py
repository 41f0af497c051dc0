"""How the runner's calls reach the API: each resent until the API answers (jittered backoff while it is
unreachable; a 4xx answer is raised, never retried), the resources of each rollout (a version is fetched once per
id), and an attempt's results: its outcome with its spans and rewards in one batched report, or, for a trace too
large for a batch, the spans and rewards first on their own under Idempotency-Keys, then the outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from typing import TYPE_CHECKING, Literal, TypeVar

from agl.agent import AgentError
from agl.errors import LightningError
from agl.runner_parts import Backoff
from agl.runner_reports import encoded_if_fits
from agl.span_records import batches
from producers.errors import ApiUnavailable, CommandRejected
from producers.lifecycle_models import MAX_REPORT_REWARDS, MAX_REPORT_SPANS, ErrorIn, ReportItemIn

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from agl.agent import Rollout
    from agl.runner_reports import ReportBatcher
    from producers.client import AsyncClient
    from producers.lifecycle_models import ClaimOut as Claim
    from producers.lifecycle_models import VerdictOut as Verdict
    from producers.models import RewardIn, SpanIn
    from schemas import ErrorInfo, Resource

log = logging.getLogger("agl.runner")
T = TypeVar("T")

#: Spans per ``POST /v1/spans`` request: keeps a chatty agent's batch under the API's body limit.
SPAN_BATCH = 500
#: Resources versions kept by id (the cache is emptied when full: ids are few in practice).
RESOURCES_KEPT = 256


async def deliver(what: str, send: Callable[[], Awaitable[T]]) -> T:
    """``send()`` until the API answers; a 4xx answer (CommandRejected) is raised, never retried."""
    backoff = Backoff()
    while True:
        try:
            return await send()
        except ApiUnavailable as e:
            await pause(backoff, what, e)


async def pause_n(what: str, error: Exception, failures: int) -> None:
    """The batcher's pause before resending: the ``failures``-th backoff delay."""
    backoff = Backoff()
    backoff.failures = failures - 1
    await pause(backoff, what, error)


async def pause(backoff: Backoff, what: str, error: Exception) -> None:
    delay = backoff.next_delay()
    log.warning("%s: the API is unreachable (%s); retrying in %.1f s", what, error, delay)
    await asyncio.sleep(delay)


class RolloutResources:
    """The rollouts' resources: pinned (each version fetched once: versions never change) or the latest."""

    def __init__(self, client: AsyncClient, wait_s: float) -> None:
        self.client = client
        #: how long pinned resources just published may take to reach the read model
        self.wait_s = wait_s
        self._by_id: dict[str, dict[str, Resource]] = {}

    async def get(self, resources_id: str | None) -> dict[str, Resource]:
        """The resources ``resources_id`` pins, or the latest (none published: ``{}``)."""
        if resources_id is not None and resources_id in self._by_id:
            return dict(self._by_id[resources_id])
        backoff, deadline = Backoff(), time.monotonic() + self.wait_s
        while True:
            answer = await deliver("resources", lambda: self.client.get_resources(resources_id))
            if answer is not None:
                if len(self._by_id) >= RESOURCES_KEPT:
                    self._by_id.clear()
                self._by_id[answer.resources_id] = dict(answer.resources)
                return dict(answer.resources)
            if resources_id is None:
                return {}
            # Pinned resources just published may not be in the read model yet: give it a moment.
            if time.monotonic() >= deadline:
                raise AgentError(f"the rollout's resources {resources_id!r} do not exist")
            await asyncio.sleep(backoff.next_delay())


class AttemptResults:
    """Reports an attempt's end: its outcome, spans and rewards, recorded together with the API's decision."""

    def __init__(self, client: AsyncClient, worker_id: str, reports: ReportBatcher) -> None:
        self.client, self.worker_id, self.reports = client, worker_id, reports

    async def finish(
        self,
        rollout: Rollout,
        status: Literal["succeeded", "failed"],
        spans: Sequence[SpanIn],
        rewards: Sequence[RewardIn],
        error: ErrorInfo | None,
    ) -> Verdict:
        """Report the outcome with its spans and rewards in one batched report (recorded with the decision); a
        trace too large for a batch goes first on its own, in keyed batches."""
        ids = {"rollout_id": rollout.rollout_id, "attempt_id": rollout.attempt_id}
        error_in = None if error is None else ErrorIn(**error.model_dump())
        if len(spans) <= MAX_REPORT_SPANS and len(rewards) <= MAX_REPORT_REWARDS:
            report = ReportItemIn(**ids, kind="finish", status=status, error=error_in, spans=tuple(spans),
                                  rewards=tuple(rewards))  # fmt: skip
            encoded = encoded_if_fits(report)
            if encoded is not None:
                return await self.reports.send_encoded(encoded)
        if status == "failed":
            with contextlib.suppress(CommandRejected):  # the failure is reported even if its spans are refused
                await self._results(rollout, spans, rewards)
        else:
            await self._results(rollout, spans, rewards)
        return await self.reports.send(ReportItemIn(**ids, kind="finish", status=status, error=error_in))

    async def shutdown(self, claim: Claim, error: ErrorInfo) -> None:
        """Say the attempt failed because the runner stopped (bounded: the watchdog ends it otherwise)."""
        send = self.client.finish_attempt(claim.rollout_id, claim.attempt_id, self.worker_id, "failed", error)
        try:
            await asyncio.wait_for(send, 5)
        except (TimeoutError, LightningError) as e:
            log.warning("attempt %s: could not report the shutdown (%r); the watchdog will", claim.attempt_id, e)

    async def _results(self, rollout: Rollout, spans: Sequence[SpanIn], rewards: Sequence[RewardIn]) -> None:
        await self._spans(rollout, spans)
        if rewards:
            key = f"{rollout.attempt_id}:rewards"
            await deliver("rewards", lambda: self.client.assign_rewards(rewards, idempotency_key=key))

    async def _spans(self, rollout: Rollout, spans: Sequence[SpanIn]) -> None:
        """Post the spans in batches, each resent with the same key (and span ids) until the API answers."""
        for n, batch in enumerate(batches(spans, SPAN_BATCH)):
            key = f"{rollout.attempt_id}:spans:{n}"
            await deliver("spans", functools.partial(self.client.record_spans, batch, idempotency_key=key))
