"""``agl topics create|list|describe`` as a user runs them, against the real broker."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest

from schemas.topics import INTERNAL_TOPICS, TOPICS

pytestmark = pytest.mark.kafka


async def agl(*args: str, bootstrap: str, prefix: str) -> tuple[int, str, str]:
    env = os.environ | {"AGL_KAFKA_BOOTSTRAP": bootstrap, "AGL_TOPIC_PREFIX": prefix}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agl", *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_create_list_describe(kafka_bootstrap, topic_prefix):
    code, out, _ = await agl("topics", "list", bootstrap=kafka_bootstrap, prefix=topic_prefix)
    assert code == 0 and out.count("MISSING") == len(TOPICS) + len(INTERNAL_TOPICS)
    code, out, _ = await agl("topics", "create", bootstrap=kafka_bootstrap, prefix=topic_prefix)
    assert code == 0 and out.count("created") == len(TOPICS) + len(INTERNAL_TOPICS)
    code, out, _ = await agl("topics", "create", bootstrap=kafka_bootstrap, prefix=topic_prefix)
    assert code == 0 and "created" not in out, "a second create changes nothing"
    code, out, _ = await agl("topics", "list", bootstrap=kafka_bootstrap, prefix=topic_prefix)
    assert code == 0 and "MISSING" not in out
    assert f"{topic_prefix}agl.rollouts.v1" in out and "4 partitions" in out
    code, out, _ = await agl("topics", "describe", "rollouts", bootstrap=kafka_bootstrap, prefix=topic_prefix)
    assert code == 0
    assert "key          rollout_id" in out and "4 in the registry, 4 on the broker" in out
    assert "rollout.enqueued, rollout.cancelled, rollout.requeued" in out and "retention.ms=-1" in out
    assert "agl.spans.v1" not in out
    code, _, err = await agl("topics", "describe", "nope", bootstrap=kafka_bootstrap, prefix=topic_prefix)
    assert code == 2 and "not in the registry: nope" in err
