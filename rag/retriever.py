"""Retrieval: dense (FAISS), BM25 (bm25s) and hybrid (reciprocal rank fusion of both).

Returns scored chunks with source and page. It does not build prompts or call a model.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from rag.bm25 import BM25Index
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
    dense: float = 0.0  # cosine of the question and this chunk, whatever the mode ranked it by
    heading: str = ""  # the heading path of the chunk's section, "" when the document has none

    def as_dict(self) -> dict:
        return {"source": self.source, "page": self.page, "heading": self.heading, "score": round(float(self.score), 6),
                "text": self.text}


def display_source(path: str) -> str:
    """A stored absolute path, shown relative to the working folder when it lies below it."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel


class Retriever:
    """`weights`: (dense, BM25) weights of hybrid fusion; None: those `rag tune` recorded in the
    collection, else (1, 1), plain reciprocal rank fusion. Mode "auto" is the mode `rag tune`
    recorded, else hybrid."""

    def __init__(self, collection: Collection, embedder: Embedder, weights: tuple[float, float] | None = None):
        if collection.model != embedder.name:
            raise CollectionError(
                f"collection '{collection.name}' was built with {collection.model!r} but the embedder is "
                f"{embedder.name!r}"
            )
        if weights is not None and (min(weights) < 0 or max(weights) <= 0):
            raise ConfigError(f"fusion weights must be non-negative and not both zero, got {weights!r}")
        self.collection = collection
        self.embedder = embedder
        self._weights = weights
        self._bm25: tuple[int, BM25Index] | None = None  # (generation, its BM25 index)

    def search(self, question: str, k: int = 4, mode: str = "auto") -> list[Hit]:
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
        mode = self.default_mode() if mode == "auto" else mode
        pool = max(k * 4, 20)  # candidates per retriever before fusion
        vector = self.embedder.embed([question])  # (1, dim)
        if mode == "dense":
            ranked = self._dense(vector, k)
        elif mode == "bm25":
            ranked = self._bm25_search(question, k)
        elif mode == "hybrid":
            ranked = fuse([self._dense(vector, pool), self._bm25_search(question, pool)], self.weights)[:k]
        else:
            raise ConfigError(f"mode must be one of auto, dense, bm25, hybrid; got {mode!r}")
        vids = [vid for vid, _ in ranked]
        chunks = self.collection.chunks_by_vid(vids)
        dense = self.collection.vectors_by_vid(vids) @ vector[0]  # (len(vids),) cosines
        return [_hit(chunks[vid], score, float(cos)) for (vid, score), cos in zip(ranked, dense) if vid in chunks]

    @property
    def weights(self) -> tuple[float, float]:
        if self._weights is not None:
            return self._weights
        recorded = self.collection.get_meta("fusion_weights")  # JSON [dense, bm25], by rag tune
        return tuple(json.loads(recorded)) if recorded else (1.0, 1.0)

    def default_mode(self) -> str:
        return self.collection.get_meta("default_mode") or "hybrid"

    def _dense(self, vector, k: int) -> list[tuple[int, float]]:
        scores, ids = self.collection.search(vector, k)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]

    def _bm25_search(self, question: str, k: int) -> list[tuple[int, float]]:
        generation = self.collection.generation
        if self._bm25 is None or self._bm25[0] != generation:
            # Saved by the commit that made this generation: memory-mapped in milliseconds.
            self._bm25 = (generation, self.collection.load_bm25())
        return self._bm25[1].search(question, k)


def fuse(rankings: list[list[tuple[int, float]]], weights: tuple[float, ...] | None = None) -> list[tuple[int, float]]:
    """Weighted reciprocal rank fusion: score(d) = sum over rankings i of w_i / (RRF_K + rank_i(d))."""
    weights = weights or (1.0,) * len(rankings)
    fused: dict[int, float] = {}
    for ranking, weight in zip(rankings, weights):
        for rank, (vid, _) in enumerate(ranking, start=1):
            fused[vid] = fused.get(vid, 0.0) + weight / (RRF_K + rank)
    return sorted(fused.items(), key=lambda item: -item[1])


def _hit(chunk: StoredChunk, score: float, dense: float) -> Hit:
    return Hit(display_source(chunk.source), chunk.page, score, chunk.text, chunk.id, chunk.start, chunk.end, dense,
               chunk.heading)
