"""Chunking: a document cut into overlapping pieces of about ``size`` characters, each knowing its heading.

Cuts prefer paragraph ends, then sentence ends, then spaces, so a chunk rarely splits a word. Markdown headings
(``#`` lines) are tracked: each chunk carries the path of headings above its start ("Guide > Install"), and that
path is prefixed to the text that gets embedded, so a chunk deep in a section still matches the section's topic.
Sizes are in characters: a stable, model-independent unit (about 4 characters per token for English).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

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


def _window(text: str, begin: int, stop: int, size: int, overlap: int) -> list[tuple[int, int]]:
    """Overlapping (start, end) spans covering ``text[begin:stop]``, cut at the best break."""
    spans: list[tuple[int, int]] = []
    start = begin
    while start < stop:
        while start < stop and text[start].isspace():
            start += 1
        if start >= stop:
            break
        limit = min(start + size, stop)
        end = stop if limit >= stop else _cut(text[:stop], start, limit)
        spans.append((start, end))
        if end >= stop:
            break
        next_start = max(end - overlap, start + 1)
        space = text.find(" ", next_start, end)  # start the overlap at a word
        start = space + 1 if overlap and space != -1 else next_start
    return spans


def chunk_text(text: str, *, size: int = 1200, overlap: int = 200) -> list[Chunk]:
    """Overlapping chunks covering ``text``; an empty text has none.

    A heading starts a new section: chunks never span two sections, and overlap stays within one, so each chunk's
    heading path is the truth for all of its text.
    """
    if size < 1 or not 0 <= overlap < size:
        raise ValueError("need size >= 1 and 0 <= overlap < size")
    headings = _headings(text)
    bounds = sorted({0, *(at for at, _, _ in headings), len(text)})
    chunks: list[Chunk] = []
    for begin, stop in itertools.pairwise(bounds):
        for start, end in _window(text, begin, stop, size, overlap):
            piece = text[start:end].strip()
            if piece:
                chunks.append(Chunk(len(chunks), start, end, piece, _heading_path(headings, start)))
    return chunks
