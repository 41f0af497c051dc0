"""The runner's reports, batched across its slots: many attempts' reports travel in one request.

A runner with many slots reports about as often as it has attempts ending: one request (and one PostgreSQL
commit) each would make the API's round trips, not the agents, the runner's limit. :class:`ReportBatcher` queues
each report and sends what has queued while the previous batch was in flight (``POST
/v1/workers/{worker_id}/reports``), so batches grow with the load and a lone report goes at once. A batch is
resent, unchanged, until the API answers it (with jittered backoff while it is unreachable): the API's decisions
are idempotent and a finish's spans and rewards are recorded once per attempt, so a resend after a lost answer
records nothing twice. Each report is encoded once, which is also how the batch's size is known.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from producers.errors import ApiUnavailable, CommandRejected
from producers.lifecycle_models import MAX_REPORTS

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from producers.client import AsyncClient
    from producers.lifecycle_models import ReportItemIn, VerdictOut

log = logging.getLogger("agl.runner")

#: A batch's body stays under this (the API's default body limit is 8 MiB).
MAX_BATCH_BYTES = 4 * 1024 * 1024
#: A report larger than this (a finish with a big trace) does not ride in a batch: its results go on their own.
MAX_REPORT_BYTES = 1024 * 1024


def encoded_if_fits(report: ReportItemIn) -> bytes | None:
    """The report as JSON, or None when it is too large for a batch (then its results go on their own)."""
    encoded = report.model_dump_json(exclude_defaults=True).encode()
    return encoded if len(encoded) <= MAX_REPORT_BYTES else None


@dataclass
class _Queued:
    encoded: bytes
    answer: asyncio.Future[VerdictOut]


class ReportBatcher:
    """Queues one worker's reports and sends them in batches, one batch in flight at a time.

    ``pause(what, error)`` waits before a resend when the API is unreachable (the runner's backoff).
    Lifecycle as aiokafka's: ``start()``, then ``stop()`` once nothing more will be sent.
    """

    def __init__(
        self,
        client: AsyncClient,
        worker_id: str,
        pause: Callable[[str, Exception, int], Awaitable[None]],
        *,
        max_reports: int = MAX_REPORTS,
        max_bytes: int = MAX_BATCH_BYTES,
    ) -> None:
        self.client, self.worker_id, self._pause = client, worker_id, pause
        self.max_reports, self.max_bytes = max_reports, max_bytes
        self._queue: deque[_Queued] = deque()
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        #: Requests sent (resends included), for tests and logs: how well reports were batched.
        self.requests = 0

    def start(self) -> None:
        assert self._task is None, "Did you call start twice?"
        self._task = asyncio.create_task(self._run(), name=f"reports of {self.worker_id}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for queued in self._queue:
            if not queued.answer.done():
                queued.answer.set_exception(ApiUnavailable("the runner stopped before the report was sent"))
        self._queue.clear()

    async def send(self, report: ReportItemIn) -> VerdictOut:
        """The API's verdict on ``report``, sent in the next batch.

        Raises:
            CommandRejected: the API refused this report (404, 409) or the whole batch (a 4xx).
        """
        return await self.send_encoded(report.model_dump_json(exclude_defaults=True).encode())

    async def send_encoded(self, encoded: bytes) -> VerdictOut:
        """:meth:`send` of a report already encoded as JSON."""
        assert self._task is not None, "start() the batcher first"
        answer: asyncio.Future[VerdictOut] = asyncio.get_running_loop().create_future()
        self._queue.append(_Queued(encoded, answer))
        self._ready.set()
        return await answer

    def _take(self) -> list[_Queued]:
        batch: list[_Queued] = []
        size = 0
        while self._queue and len(batch) < self.max_reports:
            nxt = self._queue[0]
            if batch and size + len(nxt.encoded) > self.max_bytes:
                break
            batch.append(self._queue.popleft())
            size += len(nxt.encoded) + 1
        return batch

    async def _run(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._queue:
                batch = [q for q in self._take() if not q.answer.done()]  # a cancelled sender is not waited for
                if batch:
                    await self._deliver(batch)

    async def _deliver(self, batch: list[_Queued]) -> None:
        failures = 0
        while True:
            self.requests += 1
            try:
                results = await self.client.report_many(self.worker_id, [q.encoded for q in batch])
            except ApiUnavailable as e:
                failures += 1
                await self._pause("reports", e, failures)
                continue
            except CommandRejected as e:  # the batch itself was refused: every report in it is
                for q in batch:
                    if not q.answer.done():
                        q.answer.set_exception(CommandRejected(e.status_code, e.detail))
                return
            break
        for q, result in zip(batch, results, strict=True):
            if q.answer.done():
                continue
            if result.verdict is not None:
                q.answer.set_result(result.verdict)
            else:
                error = result.error
                q.answer.set_exception(
                    CommandRejected(error.status_code if error else 500, error.detail if error else "no verdict")
                )
