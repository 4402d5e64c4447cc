"""Index kinds side by side: recall@10 against exact search, latency per query, build time and bytes
per vector of "flat", "ivf" and "hnsw" (as rag.index builds them, tuning included), at the sizes
where index_type "auto" has to choose.

Data:
- real: MiniLM vectors of 10,000 chunks of the Linux kernel documentation (bench/linux_doc.py),
  with 500 other chunks of it as queries;
- synthetic, 10 k to 1 M: drawn from the real vectors' own shape (see `Synthetic`), calibrated so
  that at 10 k they are as hard for IVF and HNSW as the real ones; queries are 1,000 more draws,
  never indexed. `calibration` in the results compares nearest-neighbour cosines at 10 k.

Queries are searched one per call, as the retriever does, with faiss on 1 and on 2 OpenMP threads
(builds use 2); OMP_WAIT_POLICY=PASSIVE. Variants that are not index kinds are measured at 100 k to
justify the choices in rag/index.py: the IVF of before this benchmark (4*sqrt(n) lists, nprobe 16),
4*sqrt(n) lists tuned, FAISS's default k-means effort, and 8-bit codes with exact re-ranking.

    python bench/index.py [--sizes 10000,100000,1000000] [--skip 1000000:hnsw] [--out bench/results/index.json]

`make bench` skips the 1 M HNSW build (about 7.5 minutes here; `auto` never picks HNSW) and carries
its row over from the last full run (`make bench-all`), which the row's "measured" date shows.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before faiss loads OpenMP
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import faiss
import numpy as np

import rag.index
from bench.linux_doc import chunks, minilm_vectors
from bench.machine import describe
from rag.index import RECALL_TARGET, _ladder, _split_for_tuning, build_index, ivf_lists, tune

REAL_BASE, REAL_QUERIES = 10_000, 500
SYN_QUERIES = 1_000
K = 10


def real_vectors() -> tuple[np.ndarray, np.ndarray]:
    texts = chunks()
    pick = np.random.default_rng(0).choice(len(texts), REAL_BASE + REAL_QUERIES, replace=False)
    vectors = minilm_vectors([texts[i] for i in pick])
    return vectors[:REAL_BASE], vectors[REAL_BASE:]


class Synthetic:
    """Draws from per-cluster Gaussians with the empirical covariance of the real vectors' clusters,
    plus `spread` times full-rank noise with the covariance of all the real vectors. 400 clusters and
    spread 0.5 make 10 k synthetic vectors exactly as hard as 10 k real ones for IVF and HNSW (the
    same tuned nprobe and efSearch: `calibration` in the results); without the full-rank noise they
    were 2.7x easier for IVF."""

    def __init__(self, real: np.ndarray, clusters: int = 400, spread: float = 0.5):
        kmeans = faiss.Kmeans(real.shape[1], clusters, niter=20, seed=1, spherical=True)
        kmeans.train(real)
        _, assign = kmeans.index.search(real, 1)
        self.groups = [real[assign[:, 0] == c] for c in range(clusters)]
        self.groups = [g for g in self.groups if len(g) >= 2]
        self.weights = np.array([len(g) for g in self.groups], dtype=float) / sum(len(g) for g in self.groups)
        values, vecs = np.linalg.eigh(np.cov(real.T))
        self.noise = (spread * vecs * np.sqrt(np.maximum(values, 0))).T.astype(np.float32)  # (d, d): z @ noise ~ N(0, spread² C)

    def draw(self, n: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        counts = rng.multinomial(n, self.weights)
        out = np.empty((n, self.groups[0].shape[1]), dtype=np.float32)
        at = 0
        for group, count in zip(self.groups, counts):
            mean = group.mean(axis=0)
            offsets = (group - mean) / math.sqrt(len(group) - 1)  # (m, d): x = mean + g @ offsets has the group's covariance
            for start in range(0, count, 100_000):
                step = min(100_000, count - start)
                out[at:at + step] = (mean + rng.standard_normal((step, len(group)), dtype=np.float32) @ offsets
                                     + rng.standard_normal((step, len(mean)), dtype=np.float32) @ self.noise)
                at += step
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        return out[rng.permutation(n)]


def nn_cosines(base: np.ndarray, queries: np.ndarray) -> dict:
    scores, _ = faiss.knn(queries, base, K, metric=faiss.METRIC_INNER_PRODUCT)
    return {"top1_p50": round(float(np.median(scores[:, 0])), 3), "top10_p50": round(float(np.median(scores[:, -1])), 3)}


def recall_at_k(found_scores: np.ndarray, exact_scores: np.ndarray) -> float:
    """(q, K) scores found and exact: the share of found neighbours scoring at least the exact 10th
    (ties count as found; -1 padding never does, cosines of normalised vectors exceed it)."""
    return float((found_scores >= exact_scores[:, -1:] - 1e-5).sum(axis=1).mean() / K)


def latency(search, queries: np.ndarray, threads: int, limit: int) -> tuple[dict, np.ndarray]:
    """Each query alone, as the retriever sends them: p50 / p95 ms, and the (n, K) scores found."""
    faiss.omp_set_num_threads(threads)
    rag.index.SEARCH_THREADS = threads  # what rag.index itself uses for one query (1)
    queries = queries[:limit]
    for q in queries[:5]:  # warm caches and pages
        search(q[None, :])
    times, found = [], []
    for q in queries:
        start = time.perf_counter()
        scores, _ = search(q[None, :])
        times.append(1000 * (time.perf_counter() - start))
        found.append(scores[0])
    faiss.omp_set_num_threads(2)
    rag.index.SEARCH_THREADS = 1
    times = np.array(times)
    return {"p50_ms": round(float(np.median(times)), 3), "p95_ms": round(float(np.percentile(times, 95)), 3),
            "queries": len(queries)}, np.array(found)


def measure(name: str, build, base: np.ndarray, queries: np.ndarray, exact: np.ndarray, work: Path,
            limit: int) -> dict:
    faiss.omp_set_num_threads(2)
    start = time.perf_counter()
    _, search, knob, save = build()
    build_s = time.perf_counter() - start
    path = work / f"{name}.faiss"
    save(path)
    size = path.stat().st_size
    path.unlink()
    row = {"index": name, "n": len(base), "build_s": round(build_s, 2), "bytes_per_vector": round(size / len(base), 1),
           **knob}
    for threads in (1, 2):
        timing, found = latency(search, queries, threads, limit)
        row[f"threads{threads}"] = timing
        row["recall@10"] = round(recall_at_k(found, exact[:len(found)]), 4)
    print(json.dumps(row), file=sys.stderr, flush=True)
    return row


def kinds(base: np.ndarray, ids: np.ndarray, dim: int):
    """(name, builder) for each rag.index kind."""
    def make(kind):
        def build():
            index = build_index(kind, dim, ids, base)
            knob = {"nprobe": index.nprobe, "nlist": faiss.extract_index_ivf(index._cpu).nlist} if kind == "ivf" else (
                {"efSearch": index.ef_search, "M": index.M} if kind == "hnsw" else {})
            return index, lambda q: index.search(q, K), knob, index.save
        return build
    return [(kind, make(kind)) for kind in ("flat", "ivf", "hnsw")]


def variants(base: np.ndarray, ids: np.ndarray, dim: int):
    """IVF configurations that are not index kinds, each tuned like rag.index tunes (except "before")."""
    n = len(base)

    def ivf(nlist: int, nprobe: int | None, kmeans_default: bool = False, sq8: bool = False):
        def build():
            quantizer = faiss.IndexFlatIP(dim)
            if sq8:
                inner = faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist, faiss.ScalarQuantizer.QT_8bit,
                                                      faiss.METRIC_INNER_PRODUCT)
            else:
                inner = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
            if not kmeans_default:
                inner.cp.max_points_per_centroid, inner.cp.niter = 64, 10
            held_out, rest = _split_for_tuning(n)
            inner.train(base[rest])
            index = faiss.IndexRefineFlat(inner) if sq8 else inner  # sq8: exact re-ranking of 4k candidates
            if sq8:
                index.k_factor = 4
            index.add(base[rest]) if sq8 else index.add_with_ids(base[rest], ids[rest])

            def at(nprobe_, queries, k):
                params = faiss.SearchParametersIVF(nprobe=nprobe_)
                if sq8:
                    params = faiss.IndexRefineSearchParameters(k_factor=4, base_index_params=params)
                return index.search(queries, k, params=params)

            chosen = nprobe or tune(at, _ladder(nlist), base[rest], base[held_out], RECALL_TARGET)
            index.add(base[held_out]) if sq8 else index.add_with_ids(base[held_out], ids[held_out])
            return index, lambda q: at(chosen, q, K), {"nprobe": chosen, "nlist": nlist}, \
                lambda path: faiss.write_index(index, str(path))
        return build

    trained = len(_split_for_tuning(n)[1])
    four = max(1, min(int(4 * math.sqrt(trained)), trained // 39))
    return [
        ("ivf-before (4*sqrt(n) lists, nprobe 16)", ivf(four, 16, kmeans_default=True)),
        ("ivf, 4*sqrt(n) lists", ivf(four, None)),
        ("ivf, faiss default k-means (256 points/list, 25 iterations)", ivf(ivf_lists(trained), None, kmeans_default=True)),
        ("ivf-sq8 + exact re-ranking (IndexRefineFlat, k_factor 4)", ivf(ivf_lists(trained), None, sq8=True)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,20000,50000,100000,1000000")
    parser.add_argument("--variants-at", type=int, default=100_000, help="size at which IVF variants are measured")
    parser.add_argument("--skip", default="", help="comma-separated size:kind pairs not to build, e.g. 1000000:hnsw; "
                        "their rows are carried over from --out's last run, marked with the date it measured them")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "index.json"))
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    last = json.loads(Path(args.out).read_text()) if skip and Path(args.out).is_file() else {}
    started = time.time()
    real, real_queries = real_vectors()
    dim = real.shape[1]
    synthetic = Synthetic(real)
    syn10k = synthetic.draw(REAL_BASE, seed=10)
    calibration = {"real": nn_cosines(real, real_queries), "synthetic": nn_cosines(syn10k, synthetic.draw(500, seed=11))}
    print(json.dumps({"calibration": calibration}), file=sys.stderr)

    work = Path(tempfile.mkdtemp(prefix="bench-index-"))
    results = []
    def data(size: int):
        if size == REAL_BASE:
            yield "real MiniLM, Linux docs", real, real_queries
        yield "synthetic", synthetic.draw(size, seed=size), synthetic.draw(SYN_QUERIES, seed=size + 1)

    for size in (int(s) for s in args.sizes.split(",")):
        for source, base, queries in data(size):
            ids = np.arange(len(base), dtype=np.int64)
            exact, _ = faiss.knn(queries, base, K, metric=faiss.METRIC_INNER_PRODUCT)
            todo = kinds(base, ids, dim) + (variants(base, ids, dim) if size == args.variants_at and source == "synthetic" else [])
            for name, build in todo:
                if f"{size}:{name}" in skip:
                    results += [row | {"measured": row.get("measured", last["date"])} for row in last.get("results", [])
                                if (row["n"], row["index"], row["data"]) == (size, name, source)]
                    continue
                limit = 100 if name == "flat" and size >= 1_000_000 else len(queries)
                row = measure(_slug(name), build, base, queries, exact, work, limit)
                row.update(index=name, data=source, measured=time.strftime("%Y-%m-%d"))
                results.append(row)
            del base
    out = {"benchmark": "index", "date": time.strftime("%Y-%m-%d"), "machine": describe(),
           "load_average_at_end": os.getloadavg(), "seconds": round(time.time() - started),
           "faiss_threads": {"build": 2, "search": [1, 2]}, "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
           "recall_target": RECALL_TARGET, "k": K, "calibration": calibration, "skipped": sorted(skip),
           "results": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    shutil.rmtree(work, ignore_errors=True)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name)[:40]


if __name__ == "__main__":
    main()
