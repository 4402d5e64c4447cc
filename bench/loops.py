"""How often does the embedded model loop in its RAG answers, before and after the loop guard?

Each question's RAG prompt is answered once, greedily, up to max_tokens with no guard (the raw
answer); the guard is then replayed over that same text word by word, as it runs while streaming,
which gives exactly the answer the product shows (greedy decoding makes the two runs one).
"Looping" is measured by rag.loops.is_looping against the passages, on the raw and on the guarded
answer.

    python bench/loops.py [--qa data/sample/qa.jsonl --docs data/sample] [--max-tokens 200]
    python bench/loops.py --name python-faq --qa data/beir/python-faq/qa.jsonl \
        --docs 'data/beir/python-faq/docs/faq-*.html' --sample 40      # 40 questions drawn with seed 0
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def guarded(raw: str, context: str) -> str:
    """What the product shows of `raw`: the loop guard and the prompt-echo cut replayed word by word."""
    from rag.loops import LoopGuard, scaffold_echo, trim

    guard = LoopGuard(context)
    for match in re.finditer(r"\S+", raw):
        text = raw[: match.end()]
        loop = guard.check(text)
        if loop is not None:
            return trim(text, loop)
        echo = scaffold_echo(text)
        if echo is not None:
            return text[:echo].rstrip()
    return raw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--qa", default=str(ROOT / "data" / "sample" / "qa.jsonl"))
    parser.add_argument("--docs", nargs="+", default=[str(ROOT / "data" / "sample")])
    parser.add_argument("--name", default="sample")
    parser.add_argument("--max-tokens", type=int, default=200)
    parser.add_argument("--sample", type=int, help="answer only N questions, drawn with --seed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "loops.json"))
    args = parser.parse_args()

    from bench.corpus import scratch_collection
    from bench.machine import describe
    from rag.answer import Assistant
    from rag.components import make_embedder, make_generator
    from rag.loops import is_looping
    from rag.retriever import Retriever
    from rag.settings import load_settings

    settings = load_settings(environ=os.environ)
    embedder = make_embedder(settings)
    collection = scratch_collection(args.name, args.docs, settings, embedder)
    generator = make_generator(settings)
    assistant = Assistant(generator, Retriever(collection, embedder), k=settings.k, abstain_threshold=None)
    rows = [json.loads(line) for line in Path(args.qa).read_text().splitlines() if line.strip()]
    if args.sample and args.sample < len(rows):
        import random

        rows = random.Random(args.seed).sample(rows, args.sample)
    results = []
    start = time.perf_counter()
    for row in rows:
        prepared = assistant.prepare(row["question"])
        context = " ".join(m["content"] for m in prepared.messages)
        raw = "".join(generator.stream(prepared.messages, max_tokens=args.max_tokens)).strip()
        shown = guarded(raw, context).strip()
        results.append({"id": row.get("id"), "raw_loops": is_looping(raw, context),
                        "guarded_loops": is_looping(shown, context), "raw_words": len(raw.split()),
                        "guarded_words": len(shown.split()), "raw": raw, "guarded": shown})
        print(f"{row.get('id')}: raw {'LOOP' if results[-1]['raw_loops'] else 'ok  '} -> "
              f"{'LOOP' if results[-1]['guarded_loops'] else 'ok'}  {shown[:80]!r}", file=sys.stderr)
    n = len(results)
    summary = {"set": args.name, "questions": n, "max_tokens": args.max_tokens,
               "looping_before": sum(r["raw_loops"] for r in results) / n,
               "looping_after": sum(r["guarded_loops"] for r in results) / n,
               "seconds": round(time.perf_counter() - start, 1)}
    out = Path(args.out)
    existing = json.loads(out.read_text()) if out.is_file() else {}
    existing[args.name] = {**summary, "rows": results, "machine": describe()}
    out.write_text(json.dumps(existing, indent=2) + "\n")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
