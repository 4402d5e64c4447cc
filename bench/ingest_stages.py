"""Ingest against its ceiling: `rag ingest`'s pipeline (a reader thread parsing ahead, embedding
batched across files) against a bare `embed` of the same chunks, and against the same steps run
file by file (parse, chunk, embed each file's chunks alone: the pipeline before it overlapped).

Sets: 2,000 small files (the first 600 characters of the Python FAQ corpus documents, built by
scripts/make_python_faq_beir.py from Debian's python3.11-doc) and three real PDFs of different
producers (glpk's LaTeX manual, gnuplot's, why3's; Debian packages glpk-doc, gnuplot-doc,
why3-doc-pdf, fetched as bench/pdf_text.py does). Reports chunks/s of each arm, the ratio to the bare
encode (goal >= 0.95 on both sets) and the process's peak RSS. The arms run twice, in rotated order,
and the medians are reported.

    python bench/ingest_stages.py [--out bench/results/ingest_stages.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
PDFS = (("glpk-doc", "usr/share/doc/glpk-doc/glpk.pdf"), ("gnuplot-doc", "usr/share/doc/gnuplot/gnuplot.pdf"),
        ("why3-doc-pdf", "usr/share/doc/why3-doc-pdf/manual.pdf"))


def small_files(folder: Path, n: int = 2000) -> list[Path]:
    from eval.beir import load_beir

    beir = load_beir(ROOT / "data" / "beir" / "python-faq")
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, doc in enumerate(list(beir.corpus.values())[:n]):
        path = folder / f"doc-{i:04d}.txt"
        path.write_text(doc["text"][:600], encoding="utf-8")
        paths.append(path)
    return paths


def pdf_files() -> list[Path]:
    from bench.pdf_text import fetch

    cache = Path(os.environ.get("RAG_CACHE_DIR", Path.home() / ".cache" / "ragvsft")) / "bench-pdfs"
    return [fetch(package, pattern, cache)[0] for package, pattern in PDFS]


def per_file(files: list[Path], embedder, chunker) -> tuple[int, float]:
    """Chunks and seconds of parse, chunk and embed, one file at a time, no overlap."""
    from ingest.pipeline import parse_file

    start, n = time.perf_counter(), 0
    for path in files:
        _, chunks = parse_file(path, chunker)
        embedder.embed([c.indexed for c in chunks])
        n += len(chunks)
    return n, time.perf_counter() - start


def measure(name: str, files: list[Path], embedder, chunker, settings, rounds: int = 2) -> dict:
    """The three arms `rounds` times, in a rotated order (a shared machine's load drifts); medians."""
    from ingest.pipeline import EMBED_STEP, ingest, parse_file
    from rag.store import Collection

    texts = [c.indexed for path in files for c in parse_file(path, chunker)[1]]

    def bare() -> float:
        start = time.perf_counter()
        for at in range(0, len(texts), EMBED_STEP):
            embedder.embed(texts[at:at + EMBED_STEP])
        return time.perf_counter() - start

    def pipeline() -> float:
        collection = Collection.open(Path(tempfile.mkdtemp()) / name, embedder.name, embedder.dim, create=True)
        report = ingest(files, collection, embedder, chunker, settings=settings)
        assert report.chunks_added == len(texts), (report.chunks_added, len(texts))
        return report.seconds

    def sequential() -> float:
        chunks, seconds = per_file(files, embedder, chunker)
        assert chunks == len(texts)
        return seconds

    arms = {"bare": bare, "ingest": pipeline, "per_file": sequential}
    seconds: dict[str, list[float]] = {arm: [] for arm in arms}
    order = list(arms)
    for _ in range(rounds):
        for arm in order:
            seconds[arm].append(arms[arm]())
        order = order[1:] + order[:1]
    median = {arm: statistics.median(values) for arm, values in seconds.items()}
    return {
        "files": len(files), "chunks": len(texts), "rounds": rounds,
        "seconds": {arm: [round(v, 1) for v in values] for arm, values in seconds.items()},
        "bare_encode_chunks_per_s": round(len(texts) / median["bare"], 1),
        "ingest_chunks_per_s": round(len(texts) / median["ingest"], 1),
        "per_file_chunks_per_s": round(len(texts) / median["per_file"], 1),
        "ingest_over_bare": round(median["bare"] / median["ingest"], 3),
        "per_file_over_bare": round(median["bare"] / median["per_file"], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "ingest_stages.json"))
    parser.add_argument("--small", type=int, default=2000)
    parser.add_argument("--sets", default="small,pdfs", help="which sets to measure (comma-separated)")
    args = parser.parse_args()

    from bench.machine import describe
    from rag.components import make_chunker, make_embedder
    from rag.settings import Settings

    settings = Settings()
    embedder = make_embedder(settings, fresh=True)
    chunker = make_chunker(settings, embedder)
    embedder.embed(["warm up"] * 64)
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    out = {"benchmark": "ingest_stages", "date": time.strftime("%Y-%m-%d"), "machine": describe(),
           "embedding_dtype": embedder.dtype, "sets": {}}
    sets = args.sets.split(",")
    if "small" in sets:
        out["sets"]["small files"] = measure("small", small_files(work / "small", args.small), embedder, chunker,
                                             settings)
    if "pdfs" in sets:
        out["sets"]["pdfs"] = measure("pdfs", pdf_files(), embedder, chunker, settings)
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
