"""What ``agl up`` does before it starts services, for deployments that run each service apart (the ``agl-prepare``
Job of infra/k8s): migrations, topics and the log-epoch check; then, when an LLM is configured and ``--api`` is
given, the ``default`` resources (the LLM, and the same model through the API's LLM proxy).

    python prepare.py [--api http://agl-api:8000] [--api-timeout 300] [--accept-log-reset]

Exit codes as ``agl``: 0 ok, 1 failure, 2 bad setting, 4 the broker's log was reset and cannot be restored exactly.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import httpx

from agl.config import Settings
from agl.errors import LightningError
from agl.stack.llm import publish_default_resources
from agl.stack.stack import Stack


async def prepare(settings: Settings, *, api_url: str | None, api_timeout_s: float, accept_log_reset: bool) -> None:
    if not settings.kafka_bootstrap or not settings.database_url:
        raise SystemExit("prepare: AGL_KAFKA_BOOTSTRAP and AGL_DATABASE_URL must both be set")
    stack = Stack(settings, broker="external", accept_log_reset=accept_log_reset)
    # The very steps `agl up` takes (migrations, topics, restore of a reset log, epoch), not a copy that could drift
    # from them; nothing else of the embedded stack starts.
    await stack._prepare_data(settings.kafka_bootstrap, settings.database_url)
    _say(f"prepared: migrations, topics (prefix {settings.topic_prefix!r}), log epoch {stack.log_epoch}")
    if stack.restored is not None:
        _say(f"the broker's log was reset; {stack.restored.describe()}")
    if api_url is None or settings.llm_endpoint is None:
        _say("no --api or no AGL_LLM_ENDPOINT: the default LLM resources are not published")
        return
    await _wait_ready(api_url, api_timeout_s)
    version = await publish_default_resources(
        api_url=api_url, database_url=settings.database_url, data_dir=settings.data_dir,
        endpoint=settings.llm_endpoint, model=settings.resolved_llm_model(), api_key_ref=settings.llm_api_key_ref,
        log_epoch=stack.log_epoch,
    )  # fmt: skip
    _say(f"published {settings.resolved_llm_model()} as resources 'default' version {version}")


async def _wait_ready(api_url: str, timeout_s: float) -> None:
    """The API starts beside this Job and is ready only once the migrations above have run."""
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=5) as client:
        while True:
            try:
                if (await client.get(f"{api_url}/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"prepare: the API at {api_url} was not ready within {timeout_s:.0f}s")
            await asyncio.sleep(2)


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prepare", description=__doc__)
    parser.add_argument("--api", default=None, help="the API's URL, to publish the default LLM resources through")
    parser.add_argument("--api-timeout", type=float, default=300.0, help="seconds to wait for the API (default 300)")
    parser.add_argument("--accept-log-reset", action="store_true", help="as `agl up --accept-log-reset`")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        asyncio.run(
            prepare(
                Settings(), api_url=args.api, api_timeout_s=args.api_timeout, accept_log_reset=args.accept_log_reset
            )
        )
    except LightningError as e:
        sys.stderr.write(f"prepare: {e}\n")
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
