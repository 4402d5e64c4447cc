"""Follow-up questions on the sample corpus: is the follow-up's evidence in the top 3, with and
without rewriting it into a standalone question first (keyword rewrite, the embedded default)?

    python bench/conversation.py [--out bench/results/conversation.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", default=str(ROOT / "data" / "sample" / "conversations.jsonl"))
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "conversation.json"))
    args = parser.parse_args()

    from bench.corpus import scratch_collection
    from bench.machine import describe
    from rag.components import make_embedder
    from rag.conversation import keyword_rewrite
    from rag.retriever import Retriever
    from rag.settings import Settings

    pairs = [json.loads(line) for line in Path(args.set).read_text().splitlines() if line.strip()]
    settings = Settings()
    embedder = make_embedder(settings)
    collection = scratch_collection("sample", [ROOT / "data" / "sample"], settings, embedder)
    retriever = Retriever(collection, embedder)

    def rank(query: str, evidence: str) -> int | None:
        hits = retriever.search(query, k=10)
        return next((n for n, h in enumerate(hits, start=1) if evidence in " ".join(h.text.split())), None)

    rows = []
    for pair in pairs:
        history = [{"role": "user", "content": pair["first"]}, {"role": "assistant", "content": "(answer)"}]
        rewritten = keyword_rewrite(pair["follow_up"], history)
        rows.append({"id": pair["id"], "follow_up": pair["follow_up"], "rewritten": rewritten,
                     "rank_without": rank(pair["follow_up"], pair["evidence"]),
                     "rank_with": rank(rewritten, pair["evidence"])})

    def within(key: str, k: int) -> int:
        return sum(r[key] is not None and r[key] <= k for r in rows)

    result = {"k": args.k, "pairs": len(rows), "found_without_rewrite": within("rank_without", args.k),
              "found_with_keyword_rewrite": within("rank_with", args.k),
              "at_rank_1": {"without_rewrite": within("rank_without", 1), "with_keyword_rewrite": within("rank_with", 1)},
              "rows": rows, "machine": describe()}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"follow-up evidence in the top {args.k}: {result['found_without_rewrite']}/{len(rows)} as asked, "
          f"{result['found_with_keyword_rewrite']}/{len(rows)} after the keyword rewrite; at rank 1: "
          f"{result['at_rank_1']['without_rewrite']} vs {result['at_rank_1']['with_keyword_rewrite']}")


if __name__ == "__main__":
    main()
