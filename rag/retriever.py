"""Retrieval: dense (FAISS), BM25 (bm25s) and hybrid (reciprocal rank fusion of both), then an
optional reranker over the top candidates (rag/rerank.py).

Dense scores count the chunk's section too: cosine(question, chunk) + section_weight x cosine(question,
section), where a section's vector is the mean of its chunks' (rag.store). A question asks about a
topic, which a whole FAQ entry or manual section states better than any one of its chunks; within a
section the order is unchanged. On the Python FAQ benchmark it lifted dense nDCG@10 from 0.716 to 0.745
and hit@1 from 0.547 to 0.598; on a second FAQ set and on the sets judged by the evidence chunk it
changed nothing (docs/BENCHMARKS.md).

Returns scored chunks with source and page. It does not build prompts or generate text.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from rag.bm25 import BM25Index
from rag.embedding import Embedder
from rag.errors import ConfigError
from rag.rerank import Reranker, rerank
from rag.settings import MAX_SECTION_WEIGHT, SECTION_WEIGHT
from rag.store import Collection, CollectionError, StoredChunk

STAGES = ("embed_s", "dense_s", "bm25_s", "fusion_s", "rerank_s")  # the timed stages of a search
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
    recorded, else hybrid. `reranker`: a second stage that orders the first `rerank_depth`
    candidates again (their score becomes its score); None: the first stage's order.
    `section_weight`: how much the section's cosine adds to a chunk's dense score (module docstring)."""

    def __init__(self, collection: Collection, embedder: Embedder, weights: tuple[float, float] | None = None,
                 reranker: Reranker | None = None, rerank_depth: int = 20, section_weight: float = SECTION_WEIGHT):
        if collection.model != embedder.name:
            raise CollectionError(
                f"collection '{collection.name}' was built with {collection.model!r} but the embedder is "
                f"{embedder.name!r}"
            )
        if weights is not None and (min(weights) < 0 or max(weights) <= 0):
            raise ConfigError(f"fusion weights must be non-negative and not both zero, got {weights!r}")
        if rerank_depth <= 0:
            raise ConfigError(f"rerank_depth must be positive, got {rerank_depth!r}")
        if not 0 <= section_weight <= MAX_SECTION_WEIGHT:
            raise ConfigError(f"section_weight must be in [0, {MAX_SECTION_WEIGHT:g}], got {section_weight!r}")
        self.section_weight = section_weight
        self.collection = collection
        self.embedder = embedder
        self._weights = weights
        self.reranker = reranker
        self.rerank_depth = rerank_depth
        self._bm25: tuple[int, BM25Index] | None = None  # (generation, its BM25 index)

    def search(self, question: str, k: int = 4, mode: str = "auto",
               timings: dict[str, float] | None = None) -> list[Hit]:
        """The best `k` chunks for `question`. `timings`, when given, receives the seconds of each
        stage: embed_s, dense_s, bm25_s, fusion_s, rerank_s (0 for a stage the mode skips)."""
        timings = {} if timings is None else timings
        timings.update(dict.fromkeys(STAGES, 0.0))
        clock = _Clock(timings)
        if not question or not question.strip():
            raise ConfigError("question is empty")
        if k <= 0:
            raise ConfigError(f"k must be positive, got {k}")
        if self.collection.refresh() and self.collection.model != self.embedder.name:
            raise CollectionError(  # re-embedded by another process since it was opened (rag tune's adaptation)
                f"collection '{self.collection.name}' is now embedded with {self.collection.model!r}, not "
                f"{self.embedder.name!r}: open it again"
            )
        if self.collection.index.ntotal == 0:
            raise CollectionError(
                f"collection '{self.collection.name}' is empty; add documents with: rag ingest PATH "
                f"--collection {self.collection.name}"
            )
        mode = self.default_mode() if mode == "auto" else mode
        n = max(k, self.rerank_depth) if self.reranker else k  # first-stage candidates
        pool = max(n * 4, 20)  # candidates per retriever before fusion
        if mode not in ("dense", "bm25", "hybrid"):
            raise ConfigError(f"mode must be one of auto, dense, bm25, hybrid; got {mode!r}")
        with clock("embed_s"):
            vector = self.embedder.embed([question])  # (1, dim)
        if mode == "dense":
            with clock("dense_s"):
                ranked = self._dense(vector, n)
        elif mode == "bm25":
            with clock("bm25_s"):
                ranked = self._bm25_search(question, n)
        else:
            with clock("dense_s"):
                dense_ranked = self._dense(vector, pool)
            with clock("bm25_s"):
                bm25_ranked = self._bm25_search(question, pool)
            with clock("fusion_s"):
                ranked = fuse([dense_ranked, bm25_ranked], self.weights)[:n]
        with clock("dense_s"):  # the chunks and the cosine of each to the question
            vids = [vid for vid, _ in ranked]
            chunks = self.collection.chunks_by_vid(vids)
            dense = self.collection.vectors_by_vid(vids) @ vector[0]  # (len(vids),) cosines
            hits = [_hit(chunks[vid], score, float(cos)) for (vid, score), cos in zip(ranked, dense) if vid in chunks]
        if self.reranker is not None:
            with clock("rerank_s"):
                hits = rerank(self.reranker, question, hits, self.rerank_depth)
        return hits[:k]

    @property
    def weights(self) -> tuple[float, float]:
        if self._weights is not None:
            return self._weights
        recorded = self.collection.get_meta("fusion_weights")  # JSON [dense, bm25], by rag tune
        return tuple(json.loads(recorded)) if recorded else (1.0, 1.0)

    def default_mode(self) -> str:
        return self.collection.get_meta("default_mode") or "hybrid"

    def _dense(self, vector, k: int) -> list[tuple[int, float]]:
        """The `k` best chunks by dense score: the chunk's cosine, plus the section's weighted cosine,
        which reorders the chunks nearest by cosine (four times as many as asked for)."""
        if not self.section_weight:
            scores, ids = self.collection.search(vector, k)
            return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]
        scores, ids = self.collection.search(vector, max(4 * k, 20))
        nearest = [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]
        sections = self.collection.section_vectors([vid for vid, _ in nearest]) @ vector[0]
        scored = [(vid, cosine + self.section_weight * float(section))
                  for (vid, cosine), section in zip(nearest, sections)]
        return sorted(scored, key=lambda item: -item[1])[:k]

    def _bm25_search(self, question: str, k: int) -> list[tuple[int, float]]:
        generation = self.collection.generation
        if self._bm25 is None or self._bm25[0] != generation:
            # Saved by the commit that made this generation: memory-mapped in milliseconds.
            self._bm25 = (generation, self.collection.load_bm25())
        return self._bm25[1].search(question, k)


class _Clock:
    """`with clock(stage):` adds the block's seconds to `timings[stage]`."""

    def __init__(self, timings: dict[str, float]):
        self.timings = timings

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[stage] += time.perf_counter() - start


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
