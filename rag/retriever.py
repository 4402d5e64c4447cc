"""Retrieval: dense (FAISS), BM25 (bm25s) and hybrid (reciprocal rank fusion of both).

Returns scored chunks with source and page. It does not build prompts or call a model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import bm25s

from rag.embedding import Embedder
from rag.errors import ConfigError
from rag.store import Collection, CollectionError, StoredChunk

RRF_K = 60  # the constant from Cormack et al. (2009); damps the weight of top ranks


@dataclass
class Hit:
    source: str
    page: int | None
    score: float
    text: str
    chunk_id: str
    start: int
    end: int

    def as_dict(self) -> dict:
        return {"source": self.source, "page": self.page, "score": round(float(self.score), 6), "text": self.text}


def display_source(path: str) -> str:
    """A stored absolute path, shown relative to the working folder when it lies below it."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel


class Retriever:
    def __init__(self, collection: Collection, embedder: Embedder):
        if collection.model != embedder.name:
            raise CollectionError(
                f"collection '{collection.name}' was built with {collection.model!r} but the embedder is "
                f"{embedder.name!r}"
            )
        self.collection = collection
        self.embedder = embedder
        self._bm25: tuple[int, bm25s.BM25, list[int]] | None = None  # (generation, index, vids)

    def search(self, question: str, k: int = 4, mode: str = "hybrid") -> list[Hit]:
        if not question or not question.strip():
            raise ConfigError("question is empty")
        if k <= 0:
            raise ConfigError(f"k must be positive, got {k}")
        self.collection.refresh()
        if self.collection.index.ntotal == 0:
            raise CollectionError(
                f"collection '{self.collection.name}' is empty; add documents with: rag ingest PATH "
                f"--collection {self.collection.name}"
            )
        pool = max(k * 4, 20)  # candidates per retriever before fusion
        if mode == "dense":
            ranked = self._dense(question, k)
        elif mode == "bm25":
            ranked = self._bm25_search(question, k)
        elif mode == "hybrid":
            ranked = fuse([self._dense(question, pool), self._bm25_search(question, pool)])[:k]
        else:
            raise ConfigError(f"mode must be one of dense, bm25, hybrid; got {mode!r}")
        chunks = self.collection.chunks_by_vid([vid for vid, _ in ranked])
        return [_hit(chunks[vid], score) for vid, score in ranked if vid in chunks]

    def _dense(self, question: str, k: int) -> list[tuple[int, float]]:
        vector = self.embedder.embed([question])
        scores, ids = self.collection.search(vector, k)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]

    def _bm25_search(self, question: str, k: int) -> list[tuple[int, float]]:
        generation = self.collection.generation
        if self._bm25 is None or self._bm25[0] != generation:
            vids, texts = self.collection.all_texts()
            index = bm25s.BM25()
            index.index(bm25s.tokenize(texts, stopwords="en", show_progress=False), show_progress=False)
            self._bm25 = (generation, index, vids)
        _, index, vids = self._bm25
        tokens = bm25s.tokenize([question], stopwords="en", show_progress=False)
        if not tokens.vocab:  # only stopwords: BM25 has nothing to match
            return []
        docs, scores = index.retrieve(tokens, k=min(k, len(vids)), show_progress=False)
        return [(vids[int(d)], float(s)) for d, s in zip(docs[0], scores[0]) if s > 0]


def fuse(rankings: list[list[tuple[int, float]]]) -> list[tuple[int, float]]:
    """Reciprocal rank fusion: score(d) = sum over rankings of 1 / (RRF_K + rank of d)."""
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, (vid, _) in enumerate(ranking, start=1):
            fused[vid] = fused.get(vid, 0.0) + 1.0 / (RRF_K + rank)
    return sorted(fused.items(), key=lambda item: -item[1])


def _hit(chunk: StoredChunk, score: float) -> Hit:
    return Hit(display_source(chunk.source), chunk.page, score, chunk.text, chunk.id, chunk.start, chunk.end)
