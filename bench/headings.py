"""Chunks that know their section, measured: retrieval with heading paths and section boundaries
against the same chunker without them, side by side in one run.

Sets: the sample corpus (data/sample, its 20 answerable questions) and the Python FAQ pages as a user
ingests them (data/beir/python-faq/docs/faq-*.html, built by scripts/make_python_faq_beir.py; its
179 questions). A question is found at rank r when the r-th chunk holds its evidence sentence
(eval.metrics.evidence_in_text). Reports hit@1, hit@3 and MRR per retrieval mode.

    python bench/headings.py [--out bench/results/headings.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SETS = {"sample": (ROOT / "data/sample/qa.jsonl", [str(ROOT / "data/sample")]),
        "python-faq": (ROOT / "data/beir/python-faq/qa.jsonl", [str(ROOT / "data/beir/python-faq/docs/faq-*.html")])}


def evidence_questions(qa: Path) -> list[dict]:
    """The answerable questions of a qa.jsonl that name their evidence sentence."""
    rows = [json.loads(line) for line in qa.read_text().splitlines() if line.strip()]
    return [r for r in rows if r.get("answerable", True) and r.get("evidence")]


def evidence_ranks(retriever, rows: list[dict], mode: str, k: int = 10) -> list[int | None]:
    """Per question, the rank of the first of `k` retrieved chunks that holds its evidence; None: none."""
    from eval.metrics import evidence_in_text

    return [next((n for n, h in enumerate(retriever.search(row["question"], k=k, mode=mode), start=1)
                  if evidence_in_text(row["evidence"], h.text)), None) for row in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "headings.json"))
    args = parser.parse_args()

    from bench.corpus import scratch_collection
    from bench.machine import describe
    from rag.chunking import Chunker
    from rag.components import make_embedder
    from rag.retriever import Retriever
    from rag.settings import Settings

    settings = Settings()
    embedder = make_embedder(settings)
    results: dict = {"machine": describe()}
    for name, (qa, docs) in SETS.items():
        if not qa.is_file():
            print(f"{name}: {qa} missing (make eval-faq builds it); skipped", file=sys.stderr)
            continue
        rows = evidence_questions(qa)
        results[name] = {"questions": len(rows)}
        for variant, use in (("without", False), ("with", True)):
            chunker = Chunker(embedder.tokenizer, embedder.max_seq_length, settings.chunk_size, settings.chunk_overlap,
                              headings=use)
            start = time.perf_counter()
            collection = scratch_collection(name, docs, settings, embedder, chunker)
            seconds = time.perf_counter() - start
            retriever = Retriever(collection, embedder, weights=(1.0, 1.0))
            scores = {}
            for mode in ("dense", "bm25", "hybrid"):
                ranks = evidence_ranks(retriever, rows, mode)
                scores[mode] = {"hit@1": sum(r == 1 for r in ranks) / len(ranks),
                                "hit@3": sum(r is not None and r <= 3 for r in ranks) / len(ranks),
                                "mrr": sum(1 / r for r in ranks if r) / len(ranks)}
            results[name][variant] = {"chunks": collection.count()[1], "ingest_s": round(seconds, 1), **scores}
            print(f"{name} {variant} headings: " + ", ".join(
                f"{m} hit@1 {v['hit@1']:.2f} hit@3 {v['hit@3']:.2f} MRR {v['mrr']:.2f}" for m, v in scores.items()),
                file=sys.stderr)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
