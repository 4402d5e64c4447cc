"""BM25: the keyword index over a collection's chunk texts (bm25s), built once and saved to a folder.

A saved index is bm25s's own files (the CSC score arrays, memory-mapped on load, and its params;
bm25s.BM25.load reads the folder too) plus two additions that make opening it take milliseconds at
any size: the chunk ids in row order (`vids.npy`) and the vocabulary as a sorted byte string with
offsets and columns (`terms.bin`, `terms-offsets.npy`, `terms-columns.npy`), binary-searched in place
instead of parsing bm25s's JSON vocabulary into a dict; `format.json` names how it was tokenised, and
a folder of another format is refused (its caller then builds the index afresh). Documents and
questions are tokenised the same way: bm25s's default tokeniser, lowercased, English stopwords removed.

It does not know about SQLite or generations: rag/store.py decides when an index is built and where
it is saved, and rag/retriever.py when it is loaded.
"""

from __future__ import annotations

import json
import mmap
import os
import shutil
from pathlib import Path

import bm25s
import numpy as np

STOPWORDS = "en"
FORMAT = {"format": 1, "tokenizer": "bm25s", "stopwords": STOPWORDS}  # change it when tokenising changes
FORMAT_FILE = "format.json"
VIDS = "vids.npy"
TERMS = "terms.bin"
TERM_OFFSETS = "terms-offsets.npy"
TERM_COLUMNS = "terms-columns.npy"


def tokenize(texts: list[str]) -> list[list[str]]:
    return bm25s.tokenize(texts, stopwords=STOPWORDS, return_ids=False, show_progress=False)


class BM25Index:
    """Chunk ids (`vids`) and the bm25s model whose row i scores chunk vids[i]."""

    def __init__(self, model: bm25s.BM25 | None, vids: np.ndarray, terms: "_Terms"):
        self._model = model  # None when there are no chunks: bm25s cannot index nothing
        self.vids = vids
        self._terms = terms

    def __len__(self) -> int:
        return len(self.vids)

    @classmethod
    def build(cls, vids: list[int] | np.ndarray, texts: list[str]) -> "BM25Index":
        vids = np.asarray(vids, dtype=np.int64)
        if not len(vids):
            return cls(None, vids, _Terms.from_columns({}))
        model = bm25s.BM25()
        model.index(bm25s.tokenize(texts, stopwords=STOPWORDS, show_progress=False), show_progress=False)
        return cls(model, vids, _Terms.from_columns(model.vocab_dict))

    def search(self, question: str, k: int) -> list[tuple[int, float]]:
        """Up to `k` (vid, score) pairs, best first; only chunks sharing a term with the question."""
        if self._model is None:
            return []
        columns = [c for c in (self._terms.column(t) for t in tokenize([question])[0]) if c >= 0]
        if not columns:  # only stopwords, or no word the collection has
            return []
        scores = self._model.get_scores_from_ids(columns)  # (len(vids),)
        k = min(k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(int(self.vids[i]), float(scores[i])) for i in top if scores[i] > 0]

    def save(self, folder: Path) -> None:
        """Write durably into `folder` (which must not exist yet as a complete index): every file is
        written and fsynced in `folder`.tmp, which is then renamed into place, so a crash leaves no
        folder or a complete one."""
        folder = Path(folder)
        tmp = folder.with_name(folder.name + ".tmp")
        remove_tree(tmp)
        tmp.mkdir(parents=True)
        if self._model is not None:
            self._model.save(tmp, show_progress=False)
        np.save(tmp / VIDS, self.vids)
        self._terms.save(tmp)
        (tmp / FORMAT_FILE).write_text(json.dumps(FORMAT))
        for path in tmp.iterdir():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
        _fsync_dir(tmp)
        remove_tree(folder)  # a folder of a generation that never committed
        os.replace(tmp, folder)
        _fsync_dir(folder.parent)

    @classmethod
    def load(cls, folder: Path) -> "BM25Index":
        """Memory-map a saved index; raises OSError or ValueError when it is missing or incomplete."""
        folder = Path(folder)
        written = json.loads((folder / FORMAT_FILE).read_text())
        if written != FORMAT:
            raise ValueError(f"{folder}: written as {written}, not {FORMAT}")
        vids = np.load(folder / VIDS, mmap_mode="r")
        terms = _Terms.load(folder)
        if not len(vids):
            return cls(None, vids, terms)
        model = bm25s.BM25.load(folder, mmap=True, load_vocab=False, show_progress=False)
        if model.scores["num_docs"] != len(vids):
            raise ValueError(f"{folder}: {model.scores['num_docs']} scored documents but {len(vids)} chunk ids")
        return cls(model, vids, terms)


class _Terms:
    """term -> column of the score matrix, as sorted UTF-8 terms searched by bisection (UTF-8 byte
    order is code point order, so sorting the encoded terms sorts the terms)."""

    def __init__(self, blob: bytes | mmap.mmap, offsets: np.ndarray, columns: np.ndarray):
        self._blob, self._offsets, self._columns = blob, offsets, columns

    @classmethod
    def from_columns(cls, vocab: dict[str, int]) -> "_Terms":
        encoded = sorted((term.encode("utf-8"), column) for term, column in vocab.items() if term)
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(term) for term, _ in encoded])
        columns = np.array([column for _, column in encoded], dtype=np.int64)
        return cls(b"".join(term for term, _ in encoded), offsets, columns)

    def column(self, term: str) -> int:
        """The column of `term`, or -1 when no chunk has it."""
        key, offsets = term.encode("utf-8"), self._offsets
        lo, hi = 0, len(self._columns)
        while lo < hi:
            mid = (lo + hi) // 2
            if self._blob[offsets[mid]:offsets[mid + 1]] < key:
                lo = mid + 1
            else:
                hi = mid
        if lo < len(self._columns) and self._blob[offsets[lo]:offsets[lo + 1]] == key:
            return int(self._columns[lo])
        return -1

    def save(self, folder: Path) -> None:
        (folder / TERMS).write_bytes(bytes(self._blob))
        np.save(folder / TERM_OFFSETS, self._offsets)
        np.save(folder / TERM_COLUMNS, self._columns)

    @classmethod
    def load(cls, folder: Path) -> "_Terms":
        offsets = np.load(folder / TERM_OFFSETS, mmap_mode="r")
        columns = np.load(folder / TERM_COLUMNS, mmap_mode="r")
        with open(folder / TERMS, "rb") as fh:
            blob = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if offsets[-1] else b""
        if len(blob) != offsets[-1] or len(columns) != len(offsets) - 1:
            raise ValueError(f"{folder}: the term files disagree ({len(blob)} bytes, {len(columns)} terms)")
        return cls(blob, offsets, columns)


def remove_tree(path: Path) -> None:
    """Delete a saved index folder (or a stray file of that name) if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        Path(path).unlink(missing_ok=True)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
