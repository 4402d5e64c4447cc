import pytest

from rag.chunking import indexed_text
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
        assert any(h.heading for h in hits)  # the marmot notes' sections, from their type size
        vectors = embedder.embed([indexed_text(h.heading, h.text) for h in hits])  # as the chunks were embedded
        expected = vectors @ embedder.embed([question])[0]
        assert np.allclose([h.dense for h in hits], expected, atol=1e-4)
    dense = Retriever(sample_collection, embedder, section_weight=0.0).search(question, k=3, mode="dense")
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


def test_a_chunk_whose_section_matches_the_question_outranks_a_closer_chunk_standing_alone(collection, embedder):
    """Hand-made vectors at chosen cosines to the question's real embedding: X (cosine 0.57) stands
    alone; Y1 (0.55) shares its heading path with Y2 (0.5) and Y3 (0.45), and their section vector is
    closer to the question (0.71) than any of them. Chunk cosine alone ranks X first; with the section's
    weighted cosine added, Y1 (0.55 + 0.3 x 0.71) passes X (0.57 + 0.3 x 0.57)."""
    import numpy as np

    from rag.chunking import Chunk

    question = "How is oolong tea processed?"
    q = embedder.embed([question])[0]
    basis = np.linalg.qr(np.column_stack([q, np.random.default_rng(0).normal(size=(embedder.dim, 5))]))[0]
    assert np.allclose(abs(basis[:, 0] @ q), 1)
    noise = basis[:, 1:].T * np.sign(basis[:, 0] @ q)  # five unit directions orthogonal to q and each other

    def at(cosine: float, direction: int) -> np.ndarray:
        return (cosine * q + np.sqrt(1 - cosine**2) * noise[direction]).astype(np.float32)

    def chunk(path: str, n: int, heading: str) -> Chunk:
        return Chunk(f"{path}#{n}", path, None, n * 100, n * 100 + 50, f"chunk {n} of {path}", heading)

    with collection.writer() as w:
        w.replace_file("/x.md", "hx", 10, [chunk("/x.md", 0, "X")], np.stack([at(0.57, 0)]))
        w.replace_file("/y.md", "hy", 10, [chunk("/y.md", n, h) for n, h in enumerate(["Y", "Y", "Y", "Z"])],
                       np.stack([at(0.55, 1), at(0.5, 2), at(0.45, 3), at(0.1, 4)]))
        w.commit()

    alone = Retriever(collection, embedder, section_weight=0.0).search(question, k=2, mode="dense")
    assert [h.chunk_id for h in alone] == ["/x.md#0", "/y.md#0"]
    assert [h.score for h in alone] == pytest.approx([0.57, 0.55], abs=1e-4)
    ranked = Retriever(collection, embedder).search(question, k=5, mode="dense")
    assert [h.chunk_id for h in ranked][:2] == ["/y.md#0", "/x.md#0"]
    assert [h.dense for h in ranked][:2] == pytest.approx([0.55, 0.57], abs=1e-4)  # the gate's cosine is the chunk's
    section_y = np.mean([at(0.55, 1), at(0.5, 2), at(0.45, 3)], axis=0)
    section_y /= np.linalg.norm(section_y)
    assert ranked[0].score == pytest.approx(0.55 + 0.3 * float(section_y @ q), abs=1e-4)
    assert [h.chunk_id for h in ranked][2:4] == ["/y.md#1", "/y.md#2"]  # within a section, the chunks' own order
    hybrid = Retriever(collection, embedder, weights=(1.0, 0.0)).search(question, k=1, mode="hybrid")
    assert hybrid[0].chunk_id == "/y.md#0"  # hybrid fuses the same dense ranking
    with pytest.raises(ValueError, match=r"section_weight must be in \[0, 2\], got 3"):
        Retriever(collection, embedder, section_weight=3)
