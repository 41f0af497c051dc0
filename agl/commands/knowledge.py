"""``agl knowledge indexer``: embed upserted documents into recorded chunk events (``agl up`` supervises it)."""

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


def run_indexer(_: argparse.Namespace) -> int:
    from agl.config import Settings
    from consumers.knowledge_indexer import IndexerConfig, KnowledgeIndexer
    from consumers.runner import install_stop_handlers
    from knowledge.embedders import from_settings

    settings = Settings()
    assert settings.kafka_bootstrap is not None and settings.database_url is not None, "`agl up` sets both"
    config = IndexerConfig(
        chunk_size=settings.knowledge_chunk_size,
        chunk_overlap=settings.knowledge_chunk_overlap,
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
