"""Contract tests: one body for every registered index type."""

import numpy as np
import pytest

from rag.index import INDEXES, build_index, choose_kind, load_index


def _vectors(n: int, dim: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.mark.parametrize("kind", sorted(INDEXES))
def test_index_contract(kind, tmp_path):
    vectors = _vectors(400)
    ids = np.arange(1000, 1400, dtype=np.int64)
    index = build_index(kind, 32, ids, vectors)
    assert index.kind == kind and index.ntotal == 400

    scores, found = index.search(vectors[:5], 3)
    assert found.shape == (5, 3)
    assert list(found[:, 0]) == list(ids[:5])  # each vector is its own nearest neighbour
    assert np.allclose(scores[:, 0], 1.0, atol=1e-5)

    assert index.remove(ids[:5]) == 5
    assert index.ntotal == 395
    _, found = index.search(vectors[:5], 3)
    assert not set(found.ravel()) & set(ids[:5])

    extra = _vectors(3, seed=1)
    index.add(np.array([7, 8, 9], dtype=np.int64), extra)
    path = tmp_path / f"{kind}.faiss"
    index.save(path)
    again = load_index(path)
    assert again.kind == kind and again.ntotal == 398
    _, found = again.search(extra, 1)
    assert list(found[:, 0]) == [7, 8, 9]


@pytest.mark.parametrize("kind", sorted(INDEXES))
def test_index_rejects_wrong_dimension(kind):
    index = build_index(kind, 32, np.arange(100, dtype=np.int64), _vectors(100))
    with pytest.raises(ValueError, match=r"expected vectors of shape \(n, 32\), got \(1, 8\)"):
        index.search(np.zeros((1, 8), dtype=np.float32), 1)


def test_unknown_index_type_lists_known():
    with pytest.raises(ValueError, match=r"unknown index type 'hnsw'; known: flat, ivf"):
        build_index("hnsw", 4, np.zeros(0, dtype=np.int64), np.zeros((0, 4), dtype=np.float32))


def test_auto_picks_exact_below_threshold():
    assert choose_kind("auto", 10, 100) == "flat"
    assert choose_kind("auto", 100, 100) == "ivf"
    assert choose_kind("flat", 10**6, 100) == "flat"
