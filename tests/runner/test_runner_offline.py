"""A runner whose API never answers (nothing listens on its port): it keeps trying, and stop() still ends it."""

from __future__ import annotations

import asyncio
import time

from agl.runner import Runner, RunnerOptions
from agl.stack._process import free_port
from producers.client import AsyncClient, RetryPolicy
from tests.runner import agents


async def test_stop_ends_a_runner_still_trying_to_register():
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    async with AsyncClient(url, retry=RetryPolicy(attempts=1)) as client:
        runner = Runner(agents.noop, client, RunnerOptions(worker_id="w-offline"))
        run = asyncio.create_task(runner.run())
        await asyncio.sleep(1.0)
        assert not run.done()  # still retrying: a runner started before its API waits for it
        started = time.monotonic()
        runner.stop()
        assert await asyncio.wait_for(run, 5) == {}
        assert time.monotonic() - started < 1.0
