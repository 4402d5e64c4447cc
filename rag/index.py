"""Index: FAISS vector search over L2-normalised vectors (inner product = cosine).

Two kinds behind one protocol, registered in INDEXES: "flat" (exact) and "ivf" (approximate, for
large collections). Vectors are kept in the collection's SQLite store too, so an index can always be
rebuilt from it; this module does not know about SQLite, chunks or files.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Callable, Protocol

import faiss
import numpy as np


class Index(Protocol):
    kind: str
    dim: int

    @property
    def ntotal(self) -> int: ...

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """ids: (n,) int64; vectors: (n, dim) float32, L2-normalised."""

    def remove(self, ids: np.ndarray) -> int:
        """Remove these ids; returns how many were present."""

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), each (n, k); missing neighbours have id -1."""

    def ids(self) -> np.ndarray:
        """(ntotal,) int64: every id the index holds."""

    def save(self, path: Path) -> None: ...


def gpu_available() -> bool:
    """True when the installed faiss was built with GPU support and sees a GPU."""
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


class _FaissIndex:
    """Shared behaviour: the CPU index is the source of truth (mutated and saved); searches run on a
    GPU copy when faiss-gpu sees a GPU, refreshed lazily after a mutation."""

    kind = ""

    def __init__(self, index: faiss.Index, use_gpu: bool | None = None):
        self._cpu = index
        self.dim = index.d
        self._use_gpu = gpu_available() if use_gpu is None else use_gpu
        self._gpu: faiss.Index | None = None
        self._gpu_resources = None

    @property
    def ntotal(self) -> int:
        return int(self._cpu.ntotal)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids):
            self._cpu.add_with_ids(_as_vectors(vectors, self.dim), np.asarray(ids, dtype=np.int64))
            self._gpu = None

    def remove(self, ids: np.ndarray) -> int:
        if not len(ids):
            return 0
        self._gpu = None
        return int(self._cpu.remove_ids(np.asarray(ids, dtype=np.int64)))

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        index = self._searcher()
        k = max(1, min(k, self.ntotal)) if self.ntotal else 1
        scores, ids = index.search(_as_vectors(vectors, self.dim), k)
        return scores, ids

    def _searcher(self) -> faiss.Index:
        if not self._use_gpu:
            return self._cpu
        if self._gpu is None:
            if self._gpu_resources is None:
                self._gpu_resources = faiss.StandardGpuResources()
            self._gpu = faiss.index_cpu_to_gpu(self._gpu_resources, 0, self._cpu)
        return self._gpu

    def ids(self) -> np.ndarray:
        inner = faiss.downcast_index(self._cpu)
        if isinstance(inner, faiss.IndexIDMap):
            return faiss.vector_to_array(inner.id_map).astype(np.int64)
        ivf = faiss.extract_index_ivf(self._cpu)
        invlists = ivf.invlists
        parts = [faiss.rev_swig_ptr(invlists.get_ids(n), invlists.list_size(n)).copy()
                 for n in range(ivf.nlist) if invlists.list_size(n)]
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)

    def save(self, path: Path) -> None:
        """Write durably: temp file, fsync, rename (a crash leaves the old file or the new one)."""
        tmp = Path(f"{path}.tmp")
        faiss.write_index(self._cpu, str(tmp))
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)


def _as_vectors(vectors: np.ndarray, dim: int) -> np.ndarray:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[1] != dim:
        raise ValueError(f"expected vectors of shape (n, {dim}), got {vectors.shape}")
    return vectors


class FlatIndex(_FaissIndex):
    """Exact inner-product search: best quality, linear cost; right for up to tens of thousands of chunks."""

    kind = "flat"

    @classmethod
    def build(cls, dim: int, ids: np.ndarray, vectors: np.ndarray) -> "FlatIndex":
        index = cls(faiss.IndexIDMap(faiss.IndexFlatIP(dim)))
        index.add(ids, vectors)
        return index


class IVFIndex(_FaissIndex):
    """Inverted-file index: vectors bucketed by k-means centroid, `nprobe` buckets searched.
    Trained on the vectors it is built from, so it is rebuilt rather than grown from empty."""

    kind = "ivf"

    def __init__(self, index: faiss.Index, use_gpu: bool | None = None):
        super().__init__(index, use_gpu)
        ivf = faiss.extract_index_ivf(index)
        ivf.nprobe = max(1, min(ivf.nlist, 16))

    @classmethod
    def build(cls, dim: int, ids: np.ndarray, vectors: np.ndarray) -> "IVFIndex":
        vectors = _as_vectors(vectors, dim)
        # ~4*sqrt(n) lists, and at least 39 training points per list as FAISS advises.
        nlist = max(1, min(int(4 * math.sqrt(len(vectors))), len(vectors) // 39))
        quantizer = faiss.IndexFlatIP(dim)
        ivf = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        ivf.train(vectors)
        ivf.own_fields = True
        quantizer.this.disown()
        index = cls(ivf)
        index.add(ids, vectors)
        return index


INDEXES: dict[str, Callable[[int, np.ndarray, np.ndarray], Index]] = {
    "flat": FlatIndex.build,
    "ivf": IVFIndex.build,
}


def build_index(kind: str, dim: int, ids: np.ndarray, vectors: np.ndarray) -> Index:
    if kind not in INDEXES:
        raise ValueError(f"unknown index type {kind!r}; known: {', '.join(INDEXES)}")
    return INDEXES[kind](dim, ids, vectors)


def load_index(path: Path) -> Index:
    raw = faiss.read_index(str(path))
    return IVFIndex(raw) if isinstance(faiss.downcast_index(raw), faiss.IndexIVF) else FlatIndex(raw)


def choose_kind(requested: str, n_vectors: int, exact_threshold: int) -> str:
    """"auto" means exact search below the threshold and IVF above it."""
    if requested != "auto":
        return requested
    return "flat" if n_vectors < exact_threshold else "ivf"
