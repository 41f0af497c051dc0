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
