"""Contract tests: one body for every registered index type."""

import faiss
import numpy as np
import pytest

from rag.index import INDEXES, RECALL_TARGET, HNSWIndex, build_index, choose_kind, load_index


def _vectors(n: int, dim: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _clustered(n: int, dim: int = 32, clusters: int = 50, seed: int = 0) -> np.ndarray:
    """Points around random centres, as embeddings of a corpus with topics are."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    v = (centres[rng.integers(clusters, size=n)] + 0.6 * rng.normal(size=(n, dim))).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.mark.parametrize("kind", sorted(INDEXES))
def test_index_contract(kind, tmp_path):
    vectors = _vectors(400)
    ids = np.arange(1000, 1400, dtype=np.int64)
    index = build_index(kind, 32, ids, vectors)
    assert index.kind == kind and index.ntotal == 400
    assert sorted(index.ids()) == list(ids)

    scores, found = index.search(vectors[:5], 3)
    assert found.shape == (5, 3)
    assert list(found[:, 0]) == list(ids[:5])  # each vector is its own nearest neighbour
    assert np.allclose(scores[:, 0], 1.0, atol=1e-5)

    assert index.remove(ids[:5]) == 5
    assert index.remove(ids[:5]) == 0  # already gone
    assert index.remove(np.array([5, 999_999], dtype=np.int64)) == 0  # never added
    assert index.remove(np.zeros(0, dtype=np.int64)) == 0
    assert index.ntotal == 395
    assert sorted(index.ids()) == list(ids[5:])
    _, found = index.search(vectors[:5], 3)
    assert not set(found.ravel()) & set(ids[:5])

    extra = _vectors(3, seed=1)
    index.add(np.array([7, 8, 9], dtype=np.int64), extra)
    path = tmp_path / f"{kind}.faiss"
    index.save(path)
    assert not (tmp_path / f"{kind}.faiss.tmp").exists()
    again = load_index(path)
    assert again.kind == kind and again.ntotal == 398
    assert sorted(again.ids()) == [7, 8, 9] + list(ids[5:])
    _, found = again.search(extra, 1)
    assert list(found[:, 0]) == [7, 8, 9]
    _, found = again.search(vectors[:5], 10)  # removed before saving: still removed after loading
    assert not set(found.ravel()) & set(ids[:5])
    _, found = again.search(extra[:1], 1000)  # k beyond the size: at most every live vector, once
    assert found.shape == (1, 398) and found[0, 0] == 7
    hits = found[0][found[0] >= 0]
    assert len(set(hits)) == len(hits) and set(hits) <= set(again.ids())


@pytest.mark.parametrize("kind", sorted(INDEXES))
def test_index_rejects_wrong_dimension(kind):
    index = build_index(kind, 32, np.arange(100, dtype=np.int64), _vectors(100))
    with pytest.raises(ValueError, match=r"expected vectors of shape \(n, 32\), got \(1, 8\)"):
        index.search(np.zeros((1, 8), dtype=np.float32), 1)


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_kinds_reach_the_recall_target_on_unseen_queries(kind, tmp_path):
    """Tuned at build on the collection's own vectors; checked here on queries it never saw."""
    points = _clustered(6200)
    vectors, queries = points[:6000], points[6000:]
    index = build_index(kind, 32, np.arange(6000, dtype=np.int64), vectors)
    _, exact = faiss.knn(queries, vectors, 10, metric=faiss.METRIC_INNER_PRODUCT)
    _, found = index.search(queries, 10)
    recall = np.mean([len(set(f) & set(e)) / 10 for f, e in zip(found, exact)])
    assert recall >= RECALL_TARGET - 0.03
    knob = index.nprobe if kind == "ivf" else index.ef_search
    index.save(tmp_path / "i.faiss")
    again = load_index(tmp_path / "i.faiss")
    assert (again.nprobe if kind == "ivf" else again.ef_search) == knob  # the tuned knob is in the file


def test_hnsw_compacts_when_a_quarter_is_tombstones(tmp_path):
    vectors = _clustered(1000)
    ids = np.arange(1000, dtype=np.int64)
    index = build_index("hnsw", 32, ids, vectors)
    ef = index.ef_search
    index.remove(ids[:200])
    assert index._cpu.ntotal == 1000 and index.ntotal == 800  # tombstoned, still in the graph
    index.save(tmp_path / "h.faiss")
    assert load_index(tmp_path / "h.faiss").ntotal == 800
    index.remove(ids[200:300])  # 300 of 1000: past a quarter, so the graph is rebuilt
    assert index._cpu.ntotal == 700 == index.ntotal and index.ef_search == ef
    _, found = index.search(vectors[300:310], 1)
    assert list(found[:, 0]) == list(ids[300:310])
    assert isinstance(index, HNSWIndex) and sorted(index.ids()) == list(ids[300:])


def test_unknown_index_type_lists_known():
    with pytest.raises(ValueError, match=r"unknown index type 'annoy'; known: flat, ivf, hnsw"):
        build_index("annoy", 4, np.zeros(0, dtype=np.int64), np.zeros((0, 4), dtype=np.float32))


def test_auto_picks_exact_below_threshold():
    assert choose_kind("auto", 10, 100) == "flat"
    assert choose_kind("auto", 100, 100) == "ivf"
    assert choose_kind("flat", 10**6, 100) == "flat"
    assert choose_kind("hnsw", 10, 100) == "hnsw"


def test_ivf_built_from_batches_never_holds_every_vector_and_reaches_the_target(tmp_path):
    """What a collection's commit uses: a sample trains it, batches fill it, exact search for the
    tuning queries runs batch by batch."""
    from rag.index import IVFIndex

    points = _clustered(6200)
    vectors, queries = points[:6000], points[6000:]
    ids = np.arange(1000, 7000, dtype=np.int64)
    largest = []

    def batches():
        for at in range(0, 6000, 500):
            largest.append(500)
            yield ids[at:at + 500], vectors[at:at + 500]

    index = IVFIndex.build_from_batches(32, 6000, batches)
    assert index.ntotal == 6000 and sorted(index.ids()) == list(ids)
    assert len(largest) == 24  # read twice, 500 at a time
    _, exact = faiss.knn(queries, vectors, 10, metric=faiss.METRIC_INNER_PRODUCT)
    _, found = index.search(queries, 10)
    recall = np.mean([len(set(f - 1000) & set(e)) / 10 for f, e in zip(found, exact)])
    assert recall >= RECALL_TARGET - 0.03 and index.nprobe < faiss.extract_index_ivf(index._cpu).nlist
    with pytest.raises(ValueError, match="expected 7000 vectors, the batches held 6000"):
        IVFIndex.build_from_batches(32, 7000, batches)
