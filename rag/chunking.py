"""Chunking: split pages into token-bounded chunks with langchain-text-splitters.

Sizes are counted with the embedding model's own tokenizer, so no chunk is longer than the embedder
reads (all-MiniLM-L6-v2 silently truncates past 256 tokens). Chunks end at section boundaries (a
section shorter than MIN_SECTION_WORDS joins the next) and carry their heading path ("Guide >
5 Software > 5.12 Backups"), which is embedded and BM25-indexed with them (`Chunk.indexed`): its
tokens are taken from the chunk's budget, never truncated off its text. It does not embed or store.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from langchain_text_splitters import RecursiveCharacterTextSplitter

from rag.errors import ConfigError
from rag.headings import SEPARATOR, HeadingPath
from rag.loading import Document

SPECIAL_TOKENS = 2  # [CLS] and [SEP], added by the embedder around every chunk
HEADING_MAX_TOKENS = 48  # a longer heading path loses its top levels
MIN_SECTION_WORDS = 12  # a section this short (a title and a line) is chunked with the next one


@dataclass(frozen=True)
class Chunk:
    id: str  # content hash of source, page, span and text
    source: str
    page: int | None
    start: int  # character span in the page text
    end: int
    text: str
    heading: str = ""  # the heading path of the section the chunk starts in; "" when there is none

    @property
    def indexed(self) -> str:
        """What is embedded and BM25-tokenised: the heading path, then the text."""
        return f"{self.heading}\n{self.text}" if self.heading else self.text


def indexed_text(heading: str, text: str) -> str:
    return f"{heading}\n{text}" if heading else text


def chunk_id(source: str, page: int | None, start: int, text: str) -> str:
    return hashlib.sha256(f"{source}\x00{page}\x00{start}\x00{text}".encode()).hexdigest()[:20]


class Chunker:
    def __init__(self, tokenizer: Any, max_seq_length: int, chunk_size: int = 200, chunk_overlap: int = 40,
                 headings: bool = True):
        """`max_seq_length` is the embedder's, special tokens included. `headings=False` ignores
        sections (no heading paths, no section boundaries): the chunking before headings, for comparison."""
        limit = max_seq_length - SPECIAL_TOKENS
        if chunk_size > limit:
            raise ConfigError(
                f"chunk_size {chunk_size} exceeds the embedding model's limit of {limit} tokens "
                f"(max_seq_length {max_seq_length} minus {SPECIAL_TOKENS} special tokens)"
            )
        self.tokenizer = tokenizer
        self.limit = limit
        self.chunk_size = chunk_size
        self.chunk_overlap = chunk_overlap
        self.headings = headings
        self._splitter = self._make_splitter(chunk_size, chunk_overlap)

    def _make_splitter(self, size: int, overlap: int) -> RecursiveCharacterTextSplitter:
        return RecursiveCharacterTextSplitter.from_huggingface_tokenizer(
            self.tokenizer, chunk_size=size, chunk_overlap=min(overlap, size // 2)
        )

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=True, truncation=False)["input_ids"])

    def split(self, doc: Document, source: str) -> list[Chunk]:
        chunks: list[Chunk] = []
        path = HeadingPath()
        for page in doc.pages:
            text = page.text
            page_headings = page.headings if self.headings else []
            starts = {h.offset: [] for h in page_headings}
            for h in page_headings:
                starts[h.offset].append(h)
            for seg_start, seg_end in self._sections(text, sorted(starts)):
                for offset in sorted(o for o in starts if seg_start <= o < seg_end):
                    for heading in starts[offset]:
                        path.enter(heading)
                heading = self._fit_heading(path.path())
                room = self.limit - (self._count(heading) + 1 if heading else 0)  # +1: the newline between
                size = max(8, min(self.chunk_size, room))
                splitter = self._splitter if size == self.chunk_size else self._make_splitter(size, self.chunk_overlap)
                for piece, start in self._split_text(text[seg_start:seg_end], splitter, size, room):
                    start += seg_start
                    chunks.append(Chunk(chunk_id(source, page.page, start, piece), source, page.page, start,
                                        start + len(piece), piece, heading))
        return chunks

    def _sections(self, text: str, offsets: list[int]) -> list[tuple[int, int]]:
        """(start, end) spans of the page cut at heading offsets; short sections join the next."""
        bounds = sorted({0, *[o for o in offsets if 0 < o < len(text)]}) + [len(text)]
        spans, start = [], bounds[0]
        for end in bounds[1:]:
            if len(text[start:end].split()) < MIN_SECTION_WORDS and end != len(text):
                continue  # too short to stand alone: it runs on into the next section
            spans.append((start, end))
            start = end
        return spans

    def _fit_heading(self, heading: str) -> str:
        """The heading path within HEADING_MAX_TOKENS: top levels go first, then a title's end."""
        parts = heading.split(SEPARATOR) if heading else []
        while len(parts) > 1 and self._count(SEPARATOR.join(parts)) > HEADING_MAX_TOKENS:
            parts = parts[1:]
        fitted = SEPARATOR.join(parts)
        while fitted and self._count(fitted) > HEADING_MAX_TOKENS:
            fitted = " ".join(fitted.split()[:-1])
        return fitted

    def _count(self, text: str) -> int:
        """Tokens without the special ones."""
        return len(self.tokenizer(text, add_special_tokens=False, truncation=False)["input_ids"])

    def _split_text(self, text: str, splitter: RecursiveCharacterTextSplitter, size: int,
                    room: int | None = None) -> list[tuple[str, int]]:
        """(text, start) pieces of at most `room` tokens (special ones aside); a piece the splitter
        left too long (token merges across separators can add a few) is split again, smaller."""
        room = self.limit if room is None else room
        out: list[tuple[str, int]] = []
        cursor = 0
        for doc in splitter.create_documents([text]):
            piece = doc.page_content
            if not piece.strip():
                continue
            start, piece = span_of(text, piece, cursor)
            cursor = max(cursor, start + 1)
            if self._count(piece) <= room or size <= 8:
                out.append((piece, start))
                continue
            smaller = max(8, size * 3 // 4)
            for sub, sub_start in self._split_text(piece, self._make_splitter(smaller, 0), smaller, room):
                out.append((sub, start + sub_start))
        return out


def span_of(text: str, piece: str, cursor: int) -> tuple[int, str]:
    """(start, exact text) of the splitter's `piece` in `text`: its first occurrence after the
    previous chunk's start, so that `text[start:start + len(exact)] == exact` always holds.
    (langchain's own start_index mixes token and character counts, and in repetitive text it can
    point at a later copy.) A piece whose separators were re-joined differently is found by its
    opening and closing words, and the chunk becomes the text between them."""
    at = text.find(piece, cursor)
    if at >= 0:
        return at, piece
    head, tail = piece[:40], piece[-40:]
    at = text.find(head, cursor)
    if at < 0:
        at = text.find(head)
    end = text.find(tail, at + len(head)) if at >= 0 else -1
    if at < 0 or end < 0:
        raise RuntimeError(f"chunking lost track of a piece of the page near offset {cursor}: {piece[:60]!r}")
    return at, text[at:end + len(tail)]
