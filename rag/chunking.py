"""Chunking: split pages into token-bounded chunks, as langchain-text-splitters' recursive splitter does.

Sizes are counted with the embedding model's own tokenizer, so no chunk is longer than the embedder
reads (all-MiniLM-L6-v2 silently truncates past 256 tokens). Chunks end at section boundaries (a
section shorter than MIN_SECTION_WORDS joins the next) and carry their heading path ("Guide >
5 Software > 5.12 Backups"), which is embedded and BM25-indexed with them (`Chunk.indexed`): its
tokens are taken from the chunk's budget, never truncated off its text. It does not embed or store.

Time is linear in the page's length and memory in its size: the splitter streams (`_Splitter`,
langchain's algorithm; tests pin the same chunks) and sections and headings are walked once, in order.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from rag.errors import ConfigError
from rag.headings import SEPARATOR, HeadingPath
from rag.loading import Document

SPECIAL_TOKENS = 2  # [CLS] and [SEP], added by the embedder around every chunk
HEADING_MAX_TOKENS = 48  # a longer heading path loses its top levels
MIN_SECTION_WORDS = 12  # a section this short (a title and a line) is chunked with the next one
COUNT_BATCH = 4096  # splits counted per batched tokenizer call
_WORD = re.compile(r"\S+")  # a word as str.split() sees one
KNOWN_SPLITS, KNOWN_LENGTH = 65_536, 64  # the counts of this many splits this short are remembered
# How files become chunks, recorded with each stored file (`Chunker.signature`): a file chunked under
# another version or other chunk settings is read again by the next `rag ingest` of it, even though
# its content is unchanged. Raise it with any change to rag/loading.py, pdf.py, html_text.py,
# headings.py or this module that changes the chunks of a file already ingested.
PARSE_VERSION = 2  # 2: PDF running headers and list items are no longer headings (2026-11-26)


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

    @property
    def signature(self) -> str:
        """What the chunks of a file depend on besides its bytes (and the tokenizer, which the
        collection's embedding model fixes); stored with each file."""
        return (f"parser {PARSE_VERSION}, chunk_size {self.chunk_size}, chunk_overlap {self.chunk_overlap}, "
                f"headings {'on' if self.headings else 'off'}")

    def _make_splitter(self, size: int, overlap: int) -> _Splitter:
        return _Splitter(self.tokenizer, chunk_size=size, chunk_overlap=min(overlap, size // 2))

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=True, truncation=False)["input_ids"])

    def split(self, doc: Document, source: str) -> list[Chunk]:
        chunks: list[Chunk] = []
        path = HeadingPath()
        fitted: dict[str, tuple[str, int]] = {}  # heading path -> (fitted, room left); many sections share one
        for page in doc.pages:
            text = page.text
            page_headings = page.headings if self.headings else []
            starts = {h.offset: [] for h in page_headings}
            for h in page_headings:
                starts[h.offset].append(h)
            offsets, passed = sorted(starts), 0  # the sections come in page order: one walk over the offsets
            for seg_start, seg_end in self._sections(text, offsets):
                while passed < len(offsets) and offsets[passed] < seg_end:
                    if offsets[passed] >= seg_start:
                        for heading in starts[offsets[passed]]:
                            path.enter(heading)
                    passed += 1
                key = path.path()
                if key not in fitted:
                    heading = self._fit_heading(key)
                    fitted[key] = heading, self.limit - (self._count(heading) + 1 if heading else 0)  # +1: the newline between
                heading, room = fitted[key]
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
        spans, start, words = [], bounds[0], 0
        for cut, end in itertools.pairwise(bounds):
            # Words of text[start:end], counted piece by piece (recounting the growing span of many
            # short sections would be quadratic), a piece's only up to MIN_SECTION_WORDS + 1 (which
            # settles it); a word the cut runs through was counted twice.
            words += sum(1 for _ in itertools.islice(_WORD.finditer(text, cut, end), MIN_SECTION_WORDS + 1))
            if cut > start and not text[cut - 1].isspace() and not text[cut].isspace():
                words -= 1
            if words < MIN_SECTION_WORDS and end != len(text):
                continue  # too short to stand alone: it runs on into the next section
            spans.append((start, end))
            start, words = end, 0
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

    def _split_text(self, text: str, splitter: _Splitter, size: int,
                    room: int | None = None) -> list[tuple[str, int]]:
        """(text, start) pieces of at most `room` tokens (special ones aside); a piece the splitter
        left too long (token merges across separators can add a few) is split again, smaller."""
        room = self.limit if room is None else room
        out: list[tuple[str, int]] = []
        cursor = 0
        for piece in splitter.split_text(text):
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


class _Splitter:
    """langchain-text-splitters' RecursiveCharacterTextSplitter as Chunker configures it (separators
    "\n\n", "\n", " ", then single characters; a separator kept at the start of the split after it;
    chunks stripped), giving the same chunks, in one streaming pass with token counts in bulk.

    langchain counts every split with its own tokenizer call (some 30 µs) and holds every split of a
    level in lists: a page that is one long line costs a call per word, and text without spaces falls
    to single characters, a call and a Python string per character (a 50 MB line: tens of minutes,
    1.4 GB). Here the splits are generated lazily, counted COUNT_BATCH at a time (each distinct one
    once, short ones remembered), and merged as they come (`_Merge`)."""

    SEPARATORS = ("\n\n", "\n", " ", "")

    def __init__(self, tokenizer: Any, chunk_size: int, chunk_overlap: int):
        self.tokenizer = tokenizer
        self.chunk_size = chunk_size
        self.chunk_overlap = chunk_overlap
        self._known: dict[str, int] = {}  # token counts of short splits (words, characters) seen lately
        self._joint: int | None = None  # tokens of "", which merged splits are joined with

    def split_text(self, text: str) -> list[str]:
        if self._joint is None:
            self._joint = self._count_all([""])[""]
        chunks: list[str] = []
        self._split(text, list(self.SEPARATORS), chunks)
        return chunks

    def _split(self, text: str, separators: list[str], chunks: list[str]) -> None:
        separator, finer = separators[-1], []
        for i, candidate in enumerate(separators):  # the first separator the text holds
            if not candidate or candidate in text:
                separator, finer = candidate, separators[i + 1:] if candidate else []
                break
        merge = _Merge(self.chunk_size, self.chunk_overlap, self._joint, chunks)
        for split, n in self._counted(_splits(text, separator)):
            if n < self.chunk_size:
                merge.add(split, n)
                continue
            merge.flush()  # a split too long to merge: the splits on either side are merged apart
            if finer:
                self._split(split, finer, chunks)
            else:
                chunks.append(split)
        merge.flush()

    def _counted(self, splits: Iterator[str]) -> Iterator[tuple[str, int]]:
        """Each split with its token count, counted COUNT_BATCH splits at a time."""
        while window := list(itertools.islice(splits, COUNT_BATCH)):
            if len(self._known) > KNOWN_SPLITS:
                self._known = {}  # replaced, not cleared: a caller up the recursion may hold the old one
            known = self._known
            counts = self._count_all([s for s in dict.fromkeys(window) if s not in known])
            known.update((s, n) for s, n in counts.items() if len(s) <= KNOWN_LENGTH)
            yield from zip(window, [counts[s] if s in counts else known[s] for s in window])

    def _count_all(self, texts: list[str]) -> dict[str, int]:
        """Token counts (special tokens aside) of distinct texts, in one batched tokenizer call."""
        if not texts:
            return {}
        ids = self.tokenizer(texts, add_special_tokens=False, truncation=False)["input_ids"]
        return dict(zip(texts, map(len, ids)))


def _splits(text: str, separator: str) -> Iterator[str]:
    """langchain's split of `text` at `separator`, kept at the start of the split after it, empty
    splits dropped; "" splits into characters. Lazily: a 50 MB line is millions of splits."""
    if not separator:
        yield from text
        return
    start, at = 0, text.find(separator)
    while at >= 0:
        if at > start:
            yield text[start:at]
        start, at = at, text.find(separator, at + len(separator))
    if len(text) > start:
        yield text[start:]


class _Merge:
    """langchain's TextSplitter._merge_splits, fed one split at a time: splits gather into a chunk
    of at most chunk_size tokens; when the next one does not fit, the chunk is emitted (stripped,
    unless empty) and splits are dropped from its front until at most chunk_overlap tokens remain
    and the next one fits. `joint`: tokens of the "" splits are joined with."""

    def __init__(self, size: int, overlap: int, joint: int, out: list[str]):
        self.size, self.overlap, self.joint, self.out = size, overlap, joint, out
        self.parts: deque[tuple[str, int]] = deque()
        self.total = 0

    def add(self, split: str, n: int) -> None:
        joint = self.joint
        if self.parts and self.total + n + joint > self.size:
            self._emit()
            while self.total > self.overlap or (self.total > 0 and self.total + n + (joint if self.parts else 0) > self.size):
                self.total -= self.parts[0][1] + (joint if len(self.parts) > 1 else 0)
                self.parts.popleft()
        self.parts.append((split, n))
        self.total += n + (joint if len(self.parts) > 1 else 0)

    def flush(self) -> None:
        if self.parts:
            self._emit()
        self.parts.clear()
        self.total = 0

    def _emit(self) -> None:
        chunk = "".join(split for split, _ in self.parts).strip()
        if chunk:
            self.out.append(chunk)


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
