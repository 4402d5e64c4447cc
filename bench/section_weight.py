"""How much a chunk's section should count in its dense score (`section_weight`), measured per weight.

A dense score is cosine(question, chunk) + w x cosine(question, section), the section being the chunks
of a file that share a heading path (rag/retriever.py). Every weight in WEIGHTS, dense mode, on:
- the Python FAQ BEIR set (bench/beir_faq.py builds and ingests it), scored per document as there:
  nDCG@10 and hit@1 over all 179 judged questions, and over its odd and even halves, to show whether a
  weight chosen on one half holds on the other;
- the chunk-level sets of bench/headings.py (the sample corpus and the Python FAQ pages): the rank of
  the first chunk that holds the question's evidence sentence (hit@1 count, MRR@10);
- `rag tune`'s synthetic questions on the FAQ collection (200, seed 0), scored against the chunk each
  was drawn from (chunk-level nDCG@10, as rag.tune scores them): what tune would see if it chose the weight.
Writes bench/results/section_weight.json.

    python bench/section_weight.py [--work DIR]   # a kept DIR skips the FAQ ingest on reruns
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from beir_faq import FAQ_K, faq_collection, per_query_scores
from headings import SETS, evidence_questions, evidence_ranks
from machine import describe

WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)


def faq_scores(collection, embedder, beir, doc_of) -> dict:
    from rag.retriever import Retriever

    out = {}
    for weight in WEIGHTS:
        retriever = Retriever(collection, embedder, section_weight=weight)
        per_query = per_query_scores(lambda q: retriever.search(q, k=FAQ_K, mode="dense"), beir, doc_of, f"w={weight}")
        ndcg, hit1 = np.array(per_query["ndcg@10"]), np.array(per_query["hit@1"])
        odd = np.arange(len(ndcg)) % 2 == 1
        out[str(weight)] = {"ndcg@10": round(float(ndcg.mean()), 4), "hit@1": round(float(hit1.mean()), 4),
                            "ndcg@10_odd": round(float(ndcg[odd].mean()), 4),
                            "ndcg@10_even": round(float(ndcg[~odd].mean()), 4)}
        print(f"faq w={weight}: {out[str(weight)]}", file=sys.stderr)
    return out


def synthetic_scores(collection, embedder) -> dict:
    from rag.retriever import Retriever
    from rag.tune import DEPTH, draw_probes, score

    probes = draw_probes(collection, 200, seed=0)
    out = {"questions": len(probes)}
    for weight in WEIGHTS:
        retriever = Retriever(collection, embedder, section_weight=weight)
        values = [score([h.chunk_id for h in retriever.search(p.question, k=DEPTH, mode="dense")], p.relevant)
                  for p in probes]
        out[str(weight)] = {metric: round(float(np.mean([v[metric] for v in values])), 4) for metric in values[0]}
    return out


def evidence_scores(embedder, settings) -> dict:
    from bench.corpus import scratch_collection
    from rag.retriever import Retriever

    out = {}
    for name, (qa, docs) in SETS.items():
        rows = evidence_questions(qa)
        collection = scratch_collection(name, docs, settings, embedder)
        out[name] = {"questions": len(rows)}
        for weight in WEIGHTS:
            ranks = evidence_ranks(Retriever(collection, embedder, section_weight=weight), rows, "dense")
            out[name][str(weight)] = {"rank1": sum(r == 1 for r in ranks),
                                      "mrr@10": round(sum(1 / r for r in ranks if r) / len(ranks), 4)}
        shutil.rmtree(collection.folder.parent, ignore_errors=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", default=str(ROOT / "data" / "beir" / "python-faq"))
    parser.add_argument("--work", help="folder for the FAQ collection, kept (default: a temporary one, removed after)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "section_weight.json"))
    args = parser.parse_args()

    from rag.settings import SECTION_WEIGHT, Settings

    start = time.perf_counter()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench-section-"))
    try:
        beir, collection, embedder, _, doc_of = faq_collection(Path(args.set), work)
        out = {"benchmark": "section_weight", "date": time.strftime("%Y-%m-%d"), "machine": describe(),
               "default": SECTION_WEIGHT, "weights": list(WEIGHTS),
               "faq": faq_scores(collection, embedder, beir, doc_of),
               "faq_synthetic": synthetic_scores(collection, embedder),
               "evidence": evidence_scores(embedder, Settings())}
        collection.close()
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    out["seconds"] = round(time.perf_counter() - start, 1)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: out[k] for k in ("faq", "evidence")}, indent=2))


if __name__ == "__main__":
    main()
