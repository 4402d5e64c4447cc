"""BM25 saved per generation vs built in every process: `rag retrieve` latency on a 100 k-chunk
collection, cold (the first search of a new process) and warm, before and after, side by side.

The collection: the first 100,000 chunks of the Linux kernel documentation (bench/linux_doc.py, real
text) with synthetic MiniLM-shaped vectors (bench/index.py's generator; real embeddings of 100 k
chunks would take hours on two cores and do not change BM25's cost), committed through the store as
a real collection (index_type auto). "before" is the same collection with its bm25-<gen>/ folder
removed, which is exactly the path of a collection written before this change: the retriever builds
the index from all chunk texts, as it used to in every process. Fresh processes alternate between the
two; each loads the embedder, opens the collection, then times its first hybrid search and 20 more.
The commit cost of building and saving the index is measured too, on the same texts.

    python bench/bm25.py [--chunks 100000] [--runs 3] [--out bench/results/bm25.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

QUESTIONS = [
    "How do I reserve huge pages at boot?", "What does the OOM killer do when memory runs out?",
    "How can I trace a function with ftrace?", "What is the purpose of the page cache writeback?",
    "How do I load firmware for a device driver?", "Which sysfs files describe a PCI device?",
    "How are interrupts routed on ARM64?", "What is RCU and when should I use it?",
    "How do I configure a network bridge?", "How does cgroup v2 limit memory?",
    "What does the kernel command line option quiet do?", "How do I enable kernel address space randomization?",
    "How are USB gadget functions configured?", "What is a devicetree binding?",
    "How do I report a kernel bug?", "What locking does a spinlock provide?",
    "How do I mount a Btrfs subvolume?", "How does the scheduler balance load across CPUs?",
    "What is the difference between kmalloc and vmalloc?", "How do I use perf to count cache misses?",
    "How are watchdog timers handled?",
]

# Runs in a fresh process: load the embedder, open the collection, time the first search and the rest.
PROBE = """
import json, sys, time
start = time.perf_counter()
from rag.embedding import SentenceTransformerEmbedder
from rag.retriever import Retriever
from rag.store import Collection
embedder = SentenceTransformerEmbedder()
embedder.embed(["warm up the model"])
loaded = time.perf_counter()
coll = Collection.open(sys.argv[1])
opened = time.perf_counter()
retriever = Retriever(coll, embedder)
questions = json.loads(sys.argv[2])
t = time.perf_counter(); retriever.search(questions[0], k=3, mode="hybrid"); first = time.perf_counter() - t
warm = []
for q in questions[1:]:
    t = time.perf_counter(); retriever.search(q, k=3, mode="hybrid"); warm.append(time.perf_counter() - t)
bm25 = []
for q in questions[1:]:
    t = time.perf_counter(); retriever._bm25_search(q, 12); bm25.append(time.perf_counter() - t)
print(json.dumps({"open_s": opened - loaded, "first_search_s": first, "warm_s": warm, "bm25_only_s": bm25,
                  "model_load_s": loaded - start}))
"""


def make_collection(folder: Path, n: int) -> dict:
    """A collection of `n` real chunk texts with synthetic vectors, in 100 files, one commit; the
    time of that commit and of building and saving the BM25 index alone."""
    from bench.index import Synthetic, real_vectors
    from bench.linux_doc import chunks
    from rag.bm25 import BM25Index
    from rag.chunking import Chunk, chunk_id
    from rag.store import Collection

    texts = chunks(n)
    real, _ = real_vectors()
    vectors = Synthetic(real).draw(n, seed=7)
    coll = Collection.open(folder, "all-MiniLM-L6-v2", vectors.shape[1], create=True)
    per_file = -(-n // 100)
    with coll.writer() as writer:
        for f, at in enumerate(range(0, n, per_file)):
            source = f"/linux-doc/part-{f:03d}.txt"
            part = texts[at:at + per_file]
            made = [Chunk(chunk_id(source, None, i, text), source, None, i, i + len(text), text)
                    for i, text in enumerate(part)]
            writer.replace_file(source, f"sha-{f}", sum(map(len, part)), made, vectors[at:at + per_file])
        start = time.perf_counter()
        writer.commit()
        commit_s = time.perf_counter() - start
        extra = "/linux-doc/one-more.txt"  # an incremental commit: one more file of 100 chunks
        more = [Chunk(chunk_id(extra, None, i, t), extra, None, i, i + len(t), t) for i, t in enumerate(texts[:100])]
        writer.replace_file(extra, "sha-more", 1, more, vectors[:100])
        start = time.perf_counter()
        writer.commit()
        incremental_s = time.perf_counter() - start
    vids, all_texts = coll.all_texts()
    start = time.perf_counter()
    bm25 = BM25Index.build(vids, all_texts)
    build_s = time.perf_counter() - start
    start = time.perf_counter()
    bm25.save(folder / "bm25-probe")
    save_s = time.perf_counter() - start
    size = sum(p.stat().st_size for p in (folder / "bm25-probe").iterdir())
    shutil.rmtree(folder / "bm25-probe")
    start = time.perf_counter()
    BM25Index.load(coll._bm25_path(coll.generation))
    load_s = time.perf_counter() - start
    info = {"chunks": coll.count()[1], "index_type": coll.index_type, "generation": coll.generation,
            "commit_all_s": round(commit_s, 2), "incremental_commit_s": round(incremental_s, 2),
            "bm25_build_s": round(build_s, 2), "bm25_save_s": round(save_s, 2), "bm25_load_in_process_s": round(load_s, 4),
            "bm25_bytes": size}
    coll.close()
    return info


def probe(folder: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", PROBE, str(folder), json.dumps(QUESTIONS)],
                          capture_output=True, text=True, cwd=ROOT, check=False)
    if proc.returncode:
        raise SystemExit(proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cli_wall(folder: Path) -> float:
    """Seconds for the whole `rag retrieve` command (Python start, model load, open, one search)."""
    env = {**os.environ, "RAG_HOME": str(folder.parent)}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "rag.cli", "retrieve", QUESTIONS[0], "--collection", folder.name],
                   check=True, capture_output=True, env=env, cwd=ROOT)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3, help="fresh processes per arm")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "bm25.json"))
    args = parser.parse_args()
    from bench.machine import describe

    started = time.time()
    work = Path(tempfile.mkdtemp(prefix="bench-bm25-"))
    after = work / "after"
    setup = make_collection(after, args.chunks)
    print(json.dumps(setup), file=sys.stderr)
    before = work / "before"
    shutil.copytree(after, before)
    shutil.rmtree(before / f"bm25-{setup['generation']}")  # a collection from before this change

    runs: dict[str, list[dict]] = {"before": [], "after": []}
    walls: dict[str, list[float]] = {"before": [], "after": []}
    for _ in range(args.runs):  # interleaved, so load on the machine hits both arms alike
        for arm, folder in (("before", before), ("after", after)):
            runs[arm].append(probe(folder))
            walls[arm].append(cli_wall(folder))
            print(arm, f"first search {runs[arm][-1]['first_search_s']:.3f} s", file=sys.stderr, flush=True)

    def ms(values):
        return round(1000 * statistics.median(values), 1)

    summary = {arm: {"cold_first_search_ms": ms([r["first_search_s"] for r in rs]),
                     "warm_search_p50_ms": ms([w for r in rs for w in r["warm_s"]]),
                     "warm_bm25_only_p50_ms": ms([w for r in rs for w in r["bm25_only_s"]]),
                     "open_collection_ms": ms([r["open_s"] for r in rs]),
                     "rag_retrieve_command_s": round(statistics.median(walls[arm]), 2)}
               for arm, rs in runs.items()}
    out = {"benchmark": "bm25", "date": time.strftime("%Y-%m-%d"), "machine": describe(),
           "load_average_at_end": os.getloadavg(), "seconds": round(time.time() - started),
           "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "collection": setup, "runs_per_arm": args.runs,
           "summary": summary, "raw": runs, "rag_retrieve_walls_s": walls}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({"collection": setup, "summary": summary}, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
