"""``agl knowledge indexer|episodes``: embed upserted documents into recorded chunk events; summarise finished
rollouts into episodic memories (``agl up`` supervises both)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser("knowledge", help="knowledge indexing")
    sub = parser.add_subparsers(dest="knowledge_command", required=True, metavar="SUBCOMMAND")
    indexer = sub.add_parser("indexer", help="chunk and embed upserted documents (AGL_EMBEDDER), publish the vectors")
    indexer.set_defaults(func=run_indexer)
    episodes = sub.add_parser(
        "episodes", help="write one episodic memory per finished rollout (AGL_MEMORY_EPISODES, see docs/settings.md)"
    )
    episodes.set_defaults(func=run_episodes)


def run_indexer(_: argparse.Namespace) -> int:
    from agl.config import Settings
    from consumers.knowledge_indexer import IndexerConfig, KnowledgeIndexer
    from consumers.runner import install_stop_handlers
    from knowledge.embedders import from_settings

    settings = Settings()
    assert settings.kafka_bootstrap is not None and settings.database_url is not None, "`agl up` sets both"
    tokens = settings.knowledge_chunk_unit == "tokens"
    config = IndexerConfig(
        chunk_size=settings.knowledge_chunk_tokens if tokens else settings.knowledge_chunk_size,
        chunk_overlap=settings.knowledge_chunk_overlap_tokens if tokens else settings.knowledge_chunk_overlap,
        chunk_unit=settings.knowledge_chunk_unit,
        embed_batch=settings.embedder_batch_size,
    )

    async def main() -> None:
        stop = asyncio.Event()
        install_stop_handlers(stop)
        embedder = from_settings(settings)
        indexer = KnowledgeIndexer(
            embedder,
            bootstrap=settings.kafka_bootstrap or "",
            database_url=settings.database_url or "",
            topic_prefix=settings.topic_prefix,
            config=config,
        )
        sys.stderr.write(f"knowledge indexer running ({embedder.model_id}, {embedder.dim} dims)\n")
        sys.stderr.flush()
        try:
            await indexer.run(stop)
        finally:
            await embedder.aclose()

    asyncio.run(main())
    return 0


def run_episodes(_: argparse.Namespace) -> int:
    from agl.config import Settings
    from consumers.episode_worker import EpisodeWorker
    from consumers.runner import install_stop_handlers
    from knowledge.episodes import policy_from_settings

    settings = Settings()
    assert settings.kafka_bootstrap is not None and settings.database_url is not None, "`agl up` sets both"
    policy = policy_from_settings(settings)

    async def main() -> None:
        stop = asyncio.Event()
        install_stop_handlers(stop)
        worker = EpisodeWorker(
            policy, bootstrap=settings.kafka_bootstrap or "", database_url=settings.database_url or "",
            topic_prefix=settings.topic_prefix, outbox_retention_s=settings.outbox_retention_s,
        )  # fmt: skip
        sys.stderr.write(f"episode worker running ({policy.describe()})\n")
        sys.stderr.flush()
        await worker.run(stop)

    asyncio.run(main())
    return 0
