import pytest

from rag.retriever import Retriever, fuse
from rag.store import CollectionError


def _hit_rate(retriever, qa, mode, k=3) -> float:
    answerable = [q for q in qa if q["answerable"]]
    found = 0
    for q in answerable:
        hits = retriever.search(q["question"], k=k, mode=mode)
        found += any(q["evidence"][:50] in " ".join(h.text.split()) for h in hits)
    return found / len(answerable)


@pytest.mark.parametrize(("mode", "floor"), [("dense", 0.8), ("bm25", 0.8), ("hybrid", 0.9)])
def test_modes_find_the_evidence(sample_collection, embedder, qa, mode, floor):
    assert _hit_rate(Retriever(sample_collection, embedder), qa, mode) >= floor


def test_hits_carry_source_page_and_score(sample_collection, embedder):
    hits = Retriever(sample_collection, embedder).search("How long do Alpine marmots hibernate?", k=2)
    assert hits[0].source.endswith("marmot_field_notes.pdf") and hits[0].page == 5
    assert hits[0].score >= hits[1].score
    assert set(hits[0].as_dict()) == {"source", "page", "heading", "score", "text"}


def test_reciprocal_rank_fusion_rewards_agreement():
    fused = fuse([[(1, 0.9), (2, 0.8), (3, 0.1)], [(2, 12.0), (4, 5.0)]])
    assert [vid for vid, _ in fused] == [2, 1, 4, 3]  # raw scores are ignored, only ranks count
    assert fused[0][1] == pytest.approx(1 / 62 + 1 / 61)


def test_bad_questions_and_empty_collection(sample_collection, collection, embedder):
    retriever = Retriever(sample_collection, embedder)
    with pytest.raises(ValueError, match="question is empty"):
        retriever.search("   ")
    with pytest.raises(ValueError, match="mode must be one of auto, dense, bm25, hybrid; got 'magic'"):
        retriever.search("tea", mode="magic")
    with pytest.raises(CollectionError, match=r"collection 'coll' is empty; add documents with: rag ingest"):
        Retriever(collection, embedder).search("tea")
    assert retriever.search("the and of", mode="bm25") == []  # only stopwords: nothing to match


def test_weighted_fusion_follows_the_heavier_ranking():
    dense, bm25 = [(1, 0.9), (2, 0.8)], [(2, 12.0), (3, 5.0)]
    assert [vid for vid, _ in fuse([dense, bm25], (1.0, 0.0))][:2] == [1, 2]
    assert [vid for vid, _ in fuse([dense, bm25], (0.2, 1.0))][:2] == [2, 3]


def test_every_hit_carries_its_dense_cosine(sample_collection, embedder):
    import numpy as np

    question = "How long do Alpine marmots hibernate?"
    for mode in ("dense", "bm25", "hybrid"):
        hits = Retriever(sample_collection, embedder).search(question, k=3, mode=mode)
        vectors = embedder.embed([h.text for h in hits])
        expected = vectors @ embedder.embed([question])[0]
        assert np.allclose([h.dense for h in hits], expected, atol=1e-4)
    dense = Retriever(sample_collection, embedder).search(question, k=3, mode="dense")
    assert [h.dense for h in dense] == pytest.approx([h.score for h in dense], abs=1e-5)


def test_search_times_each_stage_it_runs(sample_collection, embedder):
    retriever = Retriever(sample_collection, embedder)
    hybrid, dense = {}, {}
    retriever.search("How long do Alpine marmots hibernate?", k=3, mode="hybrid", timings=hybrid)
    retriever.search("How long do Alpine marmots hibernate?", k=3, mode="dense", timings=dense)
    assert set(hybrid) == set(dense) == {"embed_s", "dense_s", "bm25_s", "fusion_s", "rerank_s"}
    assert min(hybrid["embed_s"], hybrid["dense_s"], hybrid["bm25_s"], hybrid["fusion_s"]) > 0
    assert hybrid["rerank_s"] == 0 == dense["bm25_s"] == dense["fusion_s"]
    assert dense["embed_s"] > 0 and dense["dense_s"] > 0
