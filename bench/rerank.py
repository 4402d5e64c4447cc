"""Reranking on the Python FAQ benchmark: the first stage alone against the same first stage with a
reranker over its top `--depth` chunks, on the same queries in one run.

The first stage is the product's default after `rag tune`: the mode the tune recorded in the
collection (tuned here first when the collection has no record). Arms:
- none: the first stage alone;
- llm: `rag.rerank.LLMReranker` over the embedded SmolLM2 (transformers, in-process), p(yes);
- cross-encoder: only with `--cross-encoder NAME_OR_FOLDER` (no cross-encoder weights ship with
  the project and nothing is downloaded here).
Scored per document as bench/beir_faq.py (30 chunks, deduplicated to documents): hit@1, hit@3, MRR
and nDCG@10 with 95 % bootstrap intervals, and ms per query. The LLM costs seconds per query on a
small CPU, so `--queries N` scores a seeded random sample (0: all 179); "none" is also scored on
every query, to show how the sample compares. Writes bench/results/rerank.json.

    python bench/rerank.py [--queries 40] [--depth 20] [--work DIR] [--cross-encoder PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from beir_faq import FAQ_K, faq_collection, score_documents
from machine import describe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", default=str(ROOT / "data" / "beir" / "python-faq"))
    parser.add_argument("--work", help="scratch folder, kept (default: a new temporary folder); a kept one "
                                       "skips the 5-10 min FAQ ingest on reruns")
    parser.add_argument("--queries", type=int, default=40, help="a seeded random sample of N queries (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--depth", type=int, default=20, help="chunks the reranker reads (rerank_depth)")
    parser.add_argument("--cross-encoder", help="also measure this sentence-transformers CrossEncoder (name or folder)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "rerank.json"))
    args = parser.parse_args()

    import torch

    from eval.beir import BeirSet
    from rag.generator import LocalGenerator
    from rag.models import resolve_model
    from rag.rerank import CrossEncoderReranker, LLMReranker
    from rag.retriever import Retriever
    from rag.settings import load_settings
    from rag.tune import tune

    work = Path(args.work or tempfile.mkdtemp(prefix="bench-rerank-"))
    beir, collection, embedder, _, doc_of = faq_collection(Path(args.set), work / "faq-work")
    if not collection.get_meta("default_mode"):
        tune(collection, embedder)  # what a user does after ingesting: rag tune
    first_stage = Retriever(collection, embedder)
    mode = first_stage.default_mode()
    judged = [q for q in beir.queries if beir.qrels.get(q)]
    sample = judged if not args.queries or args.queries >= len(judged) else sorted(
        random.Random(args.seed).sample(judged, args.queries))
    subset = BeirSet(beir.corpus, {q: beir.queries[q] for q in sample}, {q: beir.qrels[q] for q in sample})

    settings = load_settings(environ=os.environ)
    model_path = resolve_model("", settings.cache_dir)
    rerankers = {"llm": LLMReranker(LocalGenerator(model_path, "cpu"))}
    if args.cross_encoder:
        rerankers["cross-encoder"] = CrossEncoderReranker(args.cross_encoder, "cpu")

    def search(retriever):
        return lambda question: retriever.search(question, k=FAQ_K, mode=mode)

    results = {"none (all queries)": score_documents(search(first_stage), beir, doc_of, desc="none, all")}
    results["none"] = score_documents(search(first_stage), subset, doc_of, desc="none")
    for name, reranker in rerankers.items():
        retriever = Retriever(collection, embedder, reranker=reranker, rerank_depth=args.depth)
        results[name] = score_documents(search(retriever), subset, doc_of, desc=name)

    def git(*command: str) -> str:
        return subprocess.run(["git", *command], check=False, cwd=ROOT, capture_output=True, text=True).stdout.strip()

    out = {
        "benchmark": "rerank", "date": time.strftime("%Y-%m-%d"), "git_sha": git("rev-parse", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain")), "machine": describe(), "torch_threads": torch.get_num_threads(),
        "set": {"queries": len(judged), "scored_queries": len(sample), "sample_seed": args.seed if sample != judged
                else None, "corpus_docs": len(beir.corpus), "chunks": collection.index.ntotal},
        "first_stage": {"mode": mode, "weights": list(first_stage.weights), "k": FAQ_K},
        "rerank_depth": args.depth, "embedding_model": embedder.name,
        "rerankers": {name: r.name for name, r in rerankers.items()}, "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({name: {m: round(v["mean"], 3) if isinstance(v, dict) else round(v, 1) for m, v in r.items()}
                      for name, r in results.items()}, indent=2))


if __name__ == "__main__":
    main()
