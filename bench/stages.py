"""Where the time of one answer goes, with the embedded default (in-process SmolLM2): the per-stage
seconds `rag ask --json` reports (embed, dense search, BM25, fusion, rerank, prompt, first token,
generation, total), median over the sample questions, `repeats` rounds each, after a warm-up.
bench/serve.py reports the same stages through a vLLM server.

    python bench/stages.py [--repeats 3] [--out bench/results/stages.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "stages.json"))
    args = parser.parse_args()

    from bench.corpus import scratch_collection
    from bench.machine import describe
    from rag.components import make_assistant, make_embedder, make_generator, make_retriever
    from rag.jsonl import read_jsonl
    from rag.settings import Settings

    settings = Settings()
    embedder = make_embedder(settings, fresh=True)
    collection = scratch_collection("sample", [ROOT / "data" / "sample"], settings, embedder)
    assistant = make_assistant(settings, make_generator(settings), make_retriever(settings, embedder, collection))
    questions = [row["question"] for _, row in read_jsonl(ROOT / "data" / "sample" / "qa.jsonl")]
    assistant.ask(questions[0])  # warm-up: model, BM25, first prompt
    runs = [assistant.ask(q).timings for _ in range(args.repeats) for q in questions]
    out = {"benchmark": "stages", "date": time.strftime("%Y-%m-%d"), "machine": describe(),
           "backend": "local (embedded SmolLM2)", "embedding_dtype": embedder.dtype, "retrieval": settings.mode,
           "questions": len(questions), "repeats": args.repeats,
           "median_s": {key: round(statistics.median(r[key] for r in runs), 4) for key in runs[0]}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
