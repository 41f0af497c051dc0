"""The runner: claims rollouts from the API, runs an agent on them, reports what happened. HTTP only.

Runners live on other machines than the stack, so they only ask; every decision (claim, running, finish,
cancel, timeout) is the API's. Each claim starts its attempt (the API records it ``running`` with the claim);
for each attempt the runner then fetches the rollout's resources (its pinned ``resources_id``, fetched once per
id, or the latest; none gives the agent ``{}``), runs the agent (traced per attempt: :mod:`agl.runner_execution`),
and reports the outcome with its spans (those it traced, then those it returned) and rewards in one report, which
the API records with its decision (:mod:`agl.runner_delivery`). Reports of all slots travel in batches
(:mod:`agl.runner_reports`) and are resent until the API answers them (with jittered backoff while the API is
unreachable); a resent finish records its spans and rewards no second time. A trace too large for a batch goes
first through ``POST /v1/spans`` in batches keyed by an Idempotency-Key.

A heartbeat loop reports the worker (slots, busy slots, current attempts) and every running attempt; an
attempt whose verdict says ``cancelled`` has its agent cancelled (an ``async`` agent's task is cancelled; a sync
agent's thread cannot be interrupted, so its result is dropped when it returns). :meth:`Runner.stop` (SIGTERM)
drains: no new claims (a dequeue left unanswered is asked once more, with its key, so that claims the API made
for it are run rather than abandoned), running attempts get ``drain_grace_s`` to finish, those still running
then are cancelled and reported failed, and the worker deregisters.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections import Counter, deque
from typing import TYPE_CHECKING, Any

from agl.agent import LitAgent, Rollout, agent_name
from agl.errors import LightningError
from agl.runner_delivery import RESOURCES_KEPT, SPAN_BATCH, AttemptResults, deliver, pause, pause_n
from agl.runner_execution import AgentExecution
from agl.runner_parts import (
    AttemptEnd,
    AttemptRecord,
    Backoff,
    RunnerOptions,
    _Active,
    _Failure,
    default_worker_id,
)
from agl.runner_reports import ReportBatcher
from producers.errors import ApiUnavailable, CommandRejected
from producers.lifecycle_models import ReportItemIn
from schemas import ErrorInfo

if TYPE_CHECKING:
    from producers.client import AsyncClient
    from producers.lifecycle_models import ClaimOut as Claim

# What other code imports from here: the runner, its options and error, and what it records of each attempt.
__all__ = [
    "RESOURCES_KEPT",
    "SPAN_BATCH",
    "AttemptEnd",
    "AttemptRecord",
    "Backoff",
    "Runner",
    "RunnerError",
    "RunnerOptions",
    "default_worker_id",
]

log = logging.getLogger("agl.runner")


class RunnerError(LightningError):
    """The runner cannot go on (the API refused to register it, or refused its claims)."""


class Runner:
    """Runs ``agent`` on the rollouts ``client``'s API hands out. ``await run()``; ``stop()`` drains it."""

    def __init__(self, agent: LitAgent[Any], client: AsyncClient, options: RunnerOptions | None = None) -> None:
        self.agent = agent
        self.client = client
        self.memory_agent_id = (options and options.memory_agent_id) or agent_name(agent)
        self.options = options or RunnerOptions()
        self.worker_id = self.options.worker_id or default_worker_id()
        #: The latest attempts' records (bounded: a runner may live for millions of attempts); ``ends`` counts all.
        self.records: deque[AttemptRecord] = deque(maxlen=self.options.keep_records)
        self.ends: Counter[str] = Counter()
        self._active: dict[str, _Active] = {}
        self._claimed = 0
        #: The Idempotency-Key of a dequeue sent and not yet answered (its claims may exist on the API's side).
        self._claim_key: str | None = None
        self._stopping = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self.reports = ReportBatcher(client, self.worker_id, pause_n)
        self.results = AttemptResults(client, self.worker_id, self.reports)
        self.execution = AgentExecution(self)

    # -- lifecycle ----------------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Drain: claim nothing more, let running attempts finish (up to ``drain_grace_s``), then exit."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def run(self) -> Counter[str]:
        """Register, claim and run until stopped, out of budget or idle; answers the count of each attempt end."""
        assert not self.execution.opened, "Did you call run() twice?"
        if not await self._register():
            return self.ends
        self.execution.open()
        self.reports.start()
        try:
            async with asyncio.TaskGroup() as attempts:
                heartbeats = asyncio.create_task(self._heartbeats())
                try:
                    await self._claim_loop(attempts)
                    await self._collect_unanswered(attempts)
                    await self._drain()
                finally:
                    heartbeats.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await heartbeats
        finally:
            await self.reports.stop()
            self.execution.close()
            await self._deregister()
        return self.ends

    async def _register(self) -> bool:
        """Register (retrying while the API is unreachable); False when stopped before the API answered."""
        opts = self.options
        registering = asyncio.ensure_future(
            deliver(
                "register",
                lambda: self.client.register_worker(
                    self.worker_id, capabilities=opts.capabilities, slots=opts.slots, version=opts.version
                ),
            )
        )
        stopped = asyncio.ensure_future(self._stopping.wait())
        await asyncio.wait({registering, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if not registering.done():
            registering.cancel()
            return False
        try:
            registering.result()
        except CommandRejected as e:
            raise RunnerError(f"the API refused to register worker {self.worker_id!r}: {e}") from e
        return True

    async def _deregister(self) -> None:
        reason = "drained" if self.stopping else "done"
        try:
            await asyncio.wait_for(
                deliver("deregister", lambda: self.client.deregister_worker(self.worker_id, reason)), 10
            )
        except (TimeoutError, CommandRejected) as e:
            log.warning("worker %s could not deregister (%r); the API will see it go silent", self.worker_id, e)

    # -- claiming -----------------------------------------------------------------------------------------------
    def _budget_left(self) -> int | None:
        limit = self.options.max_rollouts
        return None if limit is None else limit - self._claimed

    async def _claim_loop(self, attempts: asyncio.TaskGroup) -> None:
        opts, backoff = self.options, Backoff()
        idle_since = time.monotonic()
        # A dequeue unanswered (the API died after claiming, say) is resent with its key until answered: the API
        # then answers the claims it made, which would otherwise be held by nobody until the watchdog ends them.
        while not self.stopping and self._budget_left() != 0:
            free = opts.slots - len(self._active)
            if free <= 0:
                await self._until_slot_freed()
                continue
            if self._active:
                idle_since = time.monotonic()
            wait_ms = opts.poll_wait_ms
            if opts.idle_exit_s is not None and not self._active:
                left_s = opts.idle_exit_s - (time.monotonic() - idle_since)
                if left_s <= 0:
                    log.info("worker %s idle for %.1f s: exiting", self.worker_id, opts.idle_exit_s)
                    return
                wait_ms = min(wait_ms, max(1, int(left_s * 1000)))
            budget = self._budget_left()
            limit = min(free, 100, budget if budget is not None else free)
            key = self._claim_key = self._claim_key or f"claim-{uuid.uuid4().hex}"
            try:
                # Claimed attempts start at once: the claim records them running (no report of its own).
                claims = await self.client.dequeue(
                    self.worker_id,
                    limit=limit,
                    capabilities=opts.capabilities,
                    wait_ms=wait_ms,
                    start=True,
                    idempotency_key=key,
                )
            except ApiUnavailable as e:
                await pause(backoff, "dequeue", e)
                continue
            except CommandRejected as e:
                raise RunnerError(f"the API refused to hand out rollouts to {self.worker_id!r}: {e}") from e
            backoff, self._claim_key = Backoff(), None
            for claim in claims:
                self._start(attempts, claim)
            if claims:
                idle_since = time.monotonic()

    async def _collect_unanswered(self, attempts: asyncio.TaskGroup) -> None:
        """Resend a dequeue the loop left unanswered (stopped while the API was unreachable) and run its claims.

        The API may have claimed rollouts for it before its answer was lost. Deregistering without them would end
        their attempts ``unresponsive`` though nothing ran them, which fails a rollout that allows no retry. The
        resend (``limit=1``, no wait) answers the key's claims and claims nothing more; had the first send never
        reached the API, it may claim one rollout, which the drain then runs like the others.
        """
        key = self._claim_key
        if key is None:
            return
        opts = self.options
        try:
            claims = await asyncio.wait_for(
                deliver(
                    "dequeue",
                    lambda: self.client.dequeue(
                        self.worker_id,
                        limit=1,
                        capabilities=opts.capabilities,
                        wait_ms=0,
                        start=True,
                        idempotency_key=key,
                    ),
                ),
                opts.drain_grace_s,
            )
        except (TimeoutError, CommandRejected) as e:
            log.warning("worker %s could not ask again for its unanswered claims (%r)", self.worker_id, e)
            return
        self._claim_key = None
        for claim in claims:
            self._start(attempts, claim)

    def _start(self, attempts: asyncio.TaskGroup, claim: Claim) -> None:
        self._claimed += 1
        active = _Active(claim, running=True)
        self._active[claim.attempt_id] = active
        active.task = attempts.create_task(self._attempt(active), name=f"attempt {claim.attempt_id}")

    async def _until_slot_freed(self) -> None:
        self._slot_freed.clear()
        stopping = asyncio.ensure_future(self._stopping.wait())
        freed = asyncio.ensure_future(self._slot_freed.wait())
        try:
            await asyncio.wait({stopping, freed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            freed.cancel()

    async def _drain(self) -> None:
        """Wait for the running attempts; once stopped, for ``drain_grace_s`` at most, then cancel the rest."""
        tasks = {a.task for a in self._active.values() if a.task is not None}
        if not tasks:
            return
        # Out of budget or idle, the claimed work is ours to finish, however long; a stop() meanwhile starts the grace.
        all_done = asyncio.ensure_future(asyncio.wait(tasks))
        stopped = asyncio.ensure_future(self._stopping.wait())
        await asyncio.wait({all_done, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if all_done.done():
            return
        grace = self.options.drain_grace_s
        log.info("worker %s draining %d attempts (grace %.0f s)", self.worker_id, len(tasks), grace)
        try:
            await asyncio.wait_for(asyncio.shield(all_done), grace)
        except TimeoutError:
            for task in tasks:
                task.cancel()
            await all_done

    # -- one attempt --------------------------------------------------------------------------------------------
    async def _attempt(self, active: _Active) -> None:
        claim = active.claim
        try:
            record = await self._run_attempt(active)
        except asyncio.CancelledError:
            # Stopped by the drain deadline: say so now rather than leave it to the watchdog.
            record = AttemptRecord(claim.rollout_id, claim.attempt_id, "shutdown")
            message = f"worker {self.worker_id} stopped before the attempt ended"
            await self.results.shutdown(claim, ErrorInfo(type="RunnerShutdown", message=message))
        except CommandRejected as e:
            log.warning("attempt %s of %s: the API refused a report: %s", claim.attempt_id, claim.rollout_id, e)
            record = AttemptRecord(claim.rollout_id, claim.attempt_id, "refused")
        except Exception:
            # A bug of the runner itself must not take the other attempts down with it.
            log.exception("attempt %s of %s: the runner failed", claim.attempt_id, claim.rollout_id)
            record = AttemptRecord(claim.rollout_id, claim.attempt_id, "refused")
        finally:
            del self._active[claim.attempt_id]
            self._slot_freed.set()
        self.records.append(record)
        self.ends[record.end] += 1

    async def _run_attempt(self, active: _Active) -> AttemptRecord:
        claim = active.claim
        ids = (claim.rollout_id, claim.attempt_id)
        rollout = Rollout(
            rollout_id=claim.rollout_id, attempt_id=claim.attempt_id, sequence_id=claim.sequence_id,
            input=claim.input, mode=claim.mode, resources_id=claim.resources_id,
            config=claim.config, metadata=claim.metadata,
        )  # fmt: skip
        ended = await self.execution.run(active, rollout)
        if ended is None:
            return AttemptRecord(*ids, "cancelled")
        if isinstance(ended, _Failure):
            verdict = await self.results.finish(rollout, "failed", ended.spans, [], ended.error)
            return AttemptRecord(*ids, "failed", error=ended.error, verdict=verdict)
        outcome, rewards = ended
        try:
            verdict = await self.results.finish(rollout, "succeeded", outcome.spans, rewards, None)
        except CommandRejected as e:  # its results were refused (422): the attempt fails, and says why
            error = ErrorInfo(type="ReportRejected", message=f"the API refused a result: {e}")
            verdict = await self.results.finish(rollout, "failed", [], [], error)
            return AttemptRecord(*ids, "failed", error=error, verdict=verdict)
        return AttemptRecord(*ids, "succeeded", rewards=tuple(r.value for r in rewards), verdict=verdict)

    # -- heartbeats ---------------------------------------------------------------------------------------------
    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.options.heartbeat_s * random.uniform(0.8, 1.0))  # noqa: S311
            await asyncio.gather(
                self._beat_worker(), *(self._beat_attempt(a) for a in list(self._active.values()) if a.running)
            )

    async def _beat_worker(self) -> None:
        stats = {
            "slots": self.options.slots,
            "busy_slots": len(self._active),
            "attempts": list(self._active),
            "draining": self.stopping,
        }
        try:
            await self.client.heartbeat_worker(self.worker_id, stats)
        except LightningError as e:
            log.info("worker heartbeat not delivered (%r); the next one will be", e)

    async def _beat_attempt(self, active: _Active) -> None:
        claim = active.claim
        try:
            beat = ReportItemIn(rollout_id=claim.rollout_id, attempt_id=claim.attempt_id, kind="heartbeat")
            # Bounded: an unreachable API must not hold up the next round of heartbeats.
            verdict = await asyncio.wait_for(self.reports.send(beat), self.options.heartbeat_s * 2)
        except (LightningError, TimeoutError) as e:
            log.info("heartbeat of attempt %s not delivered (%r)", claim.attempt_id, e)
            return
        if verdict.cancelled and active.agent_task is not None and not active.agent_task.done():
            log.info("attempt %s of %s: cancelled by the API; stopping it", claim.attempt_id, claim.rollout_id)
            active.cancelled_by_api = True
            active.agent_task.cancel()
