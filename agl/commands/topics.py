"""``agl topics create|list|describe``: the topic registry (``schemas/topics.py``) against the broker."""

from __future__ import annotations

import argparse
import asyncio
from typing import TYPE_CHECKING, Any

from agl.errors import ConfigError

if TYPE_CHECKING:
    from agl.config import Settings


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser("topics", help="create, list or describe the topics")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("create", help="create the registry's topics that do not exist yet").set_defaults(
        func=cmd_create
    )
    actions.add_parser("list", help="each registry topic, and whether the broker has it").set_defaults(func=cmd_list)
    describe = actions.add_parser("describe", help="partitions, key, configs and events of topics")
    describe.add_argument("names", nargs="*", help="base names (agl.rollouts.v1) or streams (rollouts); default all")
    describe.set_defaults(func=cmd_describe)


def bootstrap_of(settings: Settings) -> str:
    """AGL_KAFKA_BOOTSTRAP, else the broker of the stack running on the data directory."""
    from agl.stack.state import with_running_stack

    bootstrap = with_running_stack(settings, need=("kafka_bootstrap",)).kafka_bootstrap
    assert bootstrap is not None
    return bootstrap


def cmd_create(_: argparse.Namespace) -> int:
    from agl.config import Settings
    from producers.admin import ensure_topics
    from schemas.topics import INTERNAL_TOPICS, TOPICS

    settings = Settings()
    specs = (*TOPICS, *INTERNAL_TOPICS)
    created = asyncio.run(ensure_topics(bootstrap_of(settings), specs, prefix=settings.topic_prefix))
    for spec in specs:
        name = spec.full_name(settings.topic_prefix)
        print(f"{'created' if name in created else 'exists '}  {name}")
    return 0


def cmd_list(_: argparse.Namespace) -> int:
    from agl.config import Settings
    from producers.admin import topic_states

    settings = Settings()
    for state in asyncio.run(topic_states(bootstrap_of(settings), prefix=settings.topic_prefix)):
        found = f"{state.broker_partitions} partitions" if state.broker_partitions is not None else "MISSING"
        print(f"{state.name:<40} {found:<15} key={state.spec.key}")
    return 0


def cmd_describe(args: argparse.Namespace) -> int:
    from agl.config import Settings
    from producers.admin import topic_states

    settings = Settings()
    states = asyncio.run(topic_states(bootstrap_of(settings), prefix=settings.topic_prefix))
    wanted = set(args.names)
    chosen = [s for s in states if not wanted or {s.spec.name, s.spec.name.split(".")[1]} & wanted]
    unknown = wanted - {n for s in states for n in (s.spec.name, s.spec.name.split(".")[1])}
    if unknown:
        raise ConfigError(f"not in the registry: {', '.join(sorted(unknown))}")
    for state in chosen:
        print("\n".join(state.describe()) + "\n")
    return 0
