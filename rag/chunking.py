"""Chunking: split pages into token-bounded chunks with langchain-text-splitters.

Sizes are counted with the embedding model's own tokenizer, so no chunk is longer than the embedder
reads (all-MiniLM-L6-v2 silently truncates past 256 tokens). It does not embed or store chunks.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from langchain_text_splitters import RecursiveCharacterTextSplitter

from rag.errors import ConfigError
from rag.loading import Document

SPECIAL_TOKENS = 2  # [CLS] and [SEP], added by the embedder around every chunk


@dataclass(frozen=True)
class Chunk:
    id: str  # content hash of source, page, span and text
    source: str
    page: int | None
    start: int  # character span in the page text
    end: int
    text: str


def chunk_id(source: str, page: int | None, start: int, text: str) -> str:
    return hashlib.sha256(f"{source}\x00{page}\x00{start}\x00{text}".encode()).hexdigest()[:20]


class Chunker:
    def __init__(self, tokenizer: Any, max_seq_length: int, chunk_size: int = 200, chunk_overlap: int = 40):
        """`max_seq_length` is the embedder's, special tokens included."""
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
        self._splitter = self._make_splitter(chunk_size, chunk_overlap)

    def _make_splitter(self, size: int, overlap: int) -> RecursiveCharacterTextSplitter:
        return RecursiveCharacterTextSplitter.from_huggingface_tokenizer(
            self.tokenizer, chunk_size=size, chunk_overlap=min(overlap, size // 2)
        )

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=True, truncation=False)["input_ids"])

    def split(self, doc: Document, source: str) -> list[Chunk]:
        chunks: list[Chunk] = []
        for page in doc.pages:
            for text, start in self._split_text(page.text, self._splitter, self.chunk_size):
                end = start + len(text)
                chunks.append(Chunk(chunk_id(source, page.page, start, text), source, page.page, start, end, text))
        return chunks

    def _split_text(self, text: str, splitter: RecursiveCharacterTextSplitter, size: int) -> list[tuple[str, int]]:
        """(text, start) pieces; a piece the splitter left too long (token merges across
        separators can add a few) is split again with a smaller size."""
        out: list[tuple[str, int]] = []
        cursor = 0
        for doc in splitter.create_documents([text]):
            piece = doc.page_content
            if not piece.strip():
                continue
            start, piece = span_of(text, piece, cursor)
            cursor = max(cursor, start + 1)
            if self.count_tokens(piece) <= self.limit or size <= 8:
                out.append((piece, start))
                continue
            smaller = max(8, size * 3 // 4)
            for sub, sub_start in self._split_text(piece, self._make_splitter(smaller, 0), smaller):
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
