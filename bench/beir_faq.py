"""Retrieval on a public benchmark: the Python FAQ (Debian's python3.11-doc) in BEIR format.

Builds the set with scripts/make_python_faq_beir.py when it is missing, ingests every corpus
document's text (its heading, which repeats the question, left out) as one file
into a scratch collection (named by a hash of its id), then scores dense, BM25 and hybrid rankings at document level: hit@1,
hit@3, MRR and nDCG@10 with 95 % bootstrap intervals, all three modes side by side in one run, and dense
and hybrid again without the section score (`section_weight` 0: each chunk's own cosine alone).

    python bench/beir_faq.py [--set data/beir/python-faq] [--work EMPTY_FOLDER] [--out bench/results/beir_faq.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

FAQ_K = 30  # chunks per query, deduplicated to documents: at most 10 are scored


def faq_collection(set_folder: Path, work: Path):
    """(beir set, collection, embedder, ingest report, {file name: doc id}) for the FAQ set under
    `set_folder` (built when missing), ingested into `work`/faq. Ingest is incremental, so a `work`
    folder kept between runs is reused without embedding again."""
    from eval.beir import doc_file_name, load_beir, write_corpus_files
    from ingest.pipeline import ingest
    from rag.components import make_chunker, make_embedder
    from rag.settings import load_settings
    from rag.store import Collection

    if not (set_folder / "corpus.jsonl").is_file():
        subprocess.run([sys.executable, str(ROOT / "scripts" / "make_python_faq_beir.py"), "--out", str(set_folder)],
                       check=True)
    beir = load_beir(set_folder)
    settings = load_settings(environ=os.environ)
    docs = work / "docs"
    write_corpus_files(beir, docs)
    doc_of = {doc_file_name(doc_id): doc_id for doc_id in beir.corpus}
    embedder = make_embedder(settings)
    collection = Collection.open(work / "faq", embedder.name, embedder.dim, create=True)
    report = ingest([docs], collection, embedder, make_chunker(settings, embedder))
    return beir, collection, embedder, report, doc_of


def per_query_scores(search, beir, doc_of: dict[str, str], desc: str = "") -> dict[str, list[float]]:
    """Document-level hit@1, hit@3, MRR and nDCG@10 of `search(question)`, a function returning chunk
    hits (the first FAQ_K, several may share a document), for each judged query in order."""
    from tqdm import tqdm

    from eval.metrics import hit_at_k, ndcg_at_k, reciprocal_rank

    judged = [q for q in beir.queries if beir.qrels.get(q)]
    per_query = {"hit@1": [], "hit@3": [], "mrr": [], "ndcg@10": []}
    for qid in tqdm(judged, desc=desc, file=sys.stderr):
        hits = search(beir.queries[qid])
        ranked = list(dict.fromkeys(doc_of[Path(h.source).name] for h in hits))[:10]
        relevant = beir.qrels[qid]
        per_query["hit@1"].append(hit_at_k(ranked, relevant, 1))
        per_query["hit@3"].append(hit_at_k(ranked, relevant, 3))
        per_query["mrr"].append(reciprocal_rank(ranked, relevant))
        per_query["ndcg@10"].append(ndcg_at_k(ranked, relevant, 10))
    return per_query


def score_documents(search, beir, doc_of: dict[str, str], desc: str = "") -> dict:
    """`per_query_scores` as a mean and 95 % interval per measure; plus ms per query."""
    from eval.metrics import bootstrap_ci

    start = time.perf_counter()
    per_query = per_query_scores(search, beir, doc_of, desc)
    seconds = time.perf_counter() - start
    results = {name: dict(zip(("mean", "low", "high"), bootstrap_ci(values))) for name, values in per_query.items()}
    results["ms_per_query"] = 1000 * seconds / len(per_query["mrr"])
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", default=str(ROOT / "data" / "beir" / "python-faq"))
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "beir_faq.json"))
    parser.add_argument("--work", help="an empty folder to build the FAQ collection in, left there for "
                                       "bench/embedding.py (default: a temporary folder)")
    args = parser.parse_args()

    from rag.retriever import Retriever

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench-beir-"))
    if (work / "faq").exists():  # ingest is incremental: a kept collection would measure nothing
        raise SystemExit(f"{work}: already holds a FAQ collection; give an empty folder")
    work.mkdir(parents=True, exist_ok=True)
    beir, collection, embedder, report, doc_of = faq_collection(Path(args.set), work)
    retriever = Retriever(collection, embedder)
    chunk_only = Retriever(collection, embedder, section_weight=0.0)
    judged = [q for q in beir.queries if beir.qrels.get(q)]
    results = {}
    for mode in ("dense", "bm25", "hybrid"):
        results[mode] = score_documents(lambda question, mode=mode: retriever.search(question, k=FAQ_K, mode=mode),
                                        beir, doc_of, desc=mode)
    for mode in ("dense", "hybrid"):
        results[f"{mode}, chunk only"] = score_documents(
            lambda question, mode=mode: chunk_only.search(question, k=FAQ_K, mode=mode), beir, doc_of,
            desc=f"{mode}, chunk only")
    out = {
        "benchmark": "beir_faq", "date": time.strftime("%Y-%m-%d"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "set": {"queries": len(judged), "corpus_docs": len(beir.corpus), "chunks": report.chunks_added,
                "ingest_s": round(report.seconds, 1)},
        "embedding_model": embedder.name, "section_weight": retriever.section_weight, "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
