"""Answers a user can trust, measured: the embedded default with its guards (gate, loop guard,
attribution with quote fallback) against the plain RAG answer it wraps, in one run.

For each question the model answers the RAG prompt once, greedily and unguarded (the plain arm).
The guarded arm is derived from that same generation, exactly as the product would produce it: the
gate decides from the retrieved passages (then no model text is used), the loop guard is replayed
over the text word by word, then attribution and the fallback run. Greedy decoding makes the
guarded generation a prefix of the plain one, so one generation serves both.

Metrics (eval/metrics.py): abstention on unanswerable questions, false abstention on answerable
ones, citation correctness (of the sentences that cite a passage, the share whose cited passage
holds the evidence, or on the FAQ set lies in the judged FAQ entry: a chunk under the heading that
is the question, since the FAQ is judged per entry while an entry spans several chunks; the
evidence-only share is reported beside it as citation_holds_evidence), fact recall and token F1,
each with a 95 % bootstrap interval.

    python bench/trust.py --set sample            # data/sample, 20 answerable + 12 unanswerable
    python bench/trust.py --set python-faq        # 40 FAQ questions (seed 0) + 14 unanswerable
    python bench/trust.py --set sample --adapter reader   # also the same model with the reader adapter

With `--adapter`, the same questions are answered a second time by the model carrying that adapter
(a registered name, a folder, or "reader" for the shipped reader adapter), plain and guarded, so
the four arms come from one run on the same retrieved passages.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SETS = {
    "sample": {"qa": [ROOT / "data/sample/qa.jsonl"], "docs": [str(ROOT / "data/sample")], "answerable": None},
    "python-faq": {"qa": [ROOT / "data/beir/python-faq/qa.jsonl", ROOT / "data/python-faq/unanswerable.jsonl"],
                   "docs": [str(ROOT / "data/beir/python-faq/docs/faq-*.html")], "answerable": 40, "entries": True},
}


def load_rows(name: str, seed: int) -> list[dict]:
    spec = SETS[name]
    rows = [json.loads(line) for path in spec["qa"] for line in Path(path).read_text().splitlines() if line.strip()]
    if spec["answerable"]:
        answerable = [r for r in rows if r.get("answerable", True)]
        keep = {r["id"] for r in random.Random(seed).sample(answerable, spec["answerable"])}
        rows = [r for r in rows if not r.get("answerable", True) or r["id"] in keep]
    return [r | {"entry": True} if spec.get("entries") and r.get("answerable", True) else r for r in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", choices=SETS, default="sample")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-tokens", type=int, default=120)
    parser.add_argument("--adapter", help="also answer with this adapter (name, folder, or the shipped 'reader')")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "trust.json"))
    args = parser.parse_args()

    from bench.corpus import scratch_collection
    from bench.loops import guarded
    from bench.machine import describe
    from eval.metrics import bootstrap_ci, evidence_in_text, fact_recall, is_abstention, token_f1
    from rag.answer import Answer, AnswerStream
    from rag.components import make_assistant, make_embedder, make_generator
    from rag.retriever import Retriever
    from rag.settings import load_settings

    settings = load_settings(environ=os.environ).replace(max_tokens=args.max_tokens)
    embedder = make_embedder(settings)
    collection = scratch_collection(args.set, SETS[args.set]["docs"], settings, embedder)
    generators = {"": make_generator(settings)}
    if args.adapter:
        generators["reader_"] = make_generator(settings, adapter=args.adapter)
    assistant = make_assistant(settings, generators[""], Retriever(collection, embedder))
    rows = load_rows(args.set, args.seed)
    out_rows = []
    start = time.perf_counter()
    for row in rows:
        prepared = assistant.prepare(row["question"])
        context = " ".join(m["content"] for m in prepared.messages)
        gate = assistant.gate(prepared)
        scored: dict = {}
        for prefix, generator in generators.items():
            raw = "".join(generator.stream(prepared.messages, max_tokens=args.max_tokens)).strip()
            stream = AnswerStream(assistant, row["question"], "rag", prepared, gate=gate)
            if gate is None:  # the product's answer from the same greedy text: loop guard, then attribution
                shown = guarded(raw, context).strip()
                answer = Answer(row["question"], shown, prepared.hits, "rag", {}, [], prepared.messages,
                                model_answer=shown, query=prepared.query)
                if is_abstention(shown):
                    answer.kind = "abstained"
                else:
                    stream.attribute(answer)
            else:
                for _ in stream:
                    pass
                answer = stream.answer
            one = _score(row, raw, answer, prepared.hits, evidence_in_text, fact_recall, token_f1, is_abstention)
            scored.update({(k if k in ("id", "answerable") else prefix + k): v for k, v in one.items()})
            print(f"{row['id']} {prefix or 'base_'}: {answer.kind:9} {answer.answer[:90]!r}", file=sys.stderr)
        out_rows.append(scored)

    def summary(arm: str) -> dict:
        metrics = {}
        for name in ("abstention", "false_abstention", "citation_correct", "citation_holds_evidence", "fact_recall",
                     "token_f1", "cites"):
            values = [r[arm][name] for r in out_rows if r[arm].get(name) is not None]
            mean, low, high = bootstrap_ci(values, seed=args.seed) if values else (None, None, None)
            metrics[name] = {"mean": mean, "low": low, "high": high, "n": len(values)}
        return metrics

    result = {"set": args.set, "questions": len(out_rows),
              "answerable": sum(r["answerable"] for r in out_rows), "max_tokens": args.max_tokens,
              "settings": {"min_coverage": settings.min_coverage, "abstain_threshold": assistant.threshold(),
                           "fallback": settings.fallback},
              "adapter": args.adapter, **{prefix + arm: summary(prefix + arm) for prefix in generators
                                          for arm in ("plain", "guarded")},
              "seconds": round(time.perf_counter() - start, 1), "rows": out_rows, "machine": describe()}
    out = Path(args.out)
    existing = json.loads(out.read_text()) if out.is_file() else {}
    existing[args.set] = result
    out.write_text(json.dumps(existing, indent=2) + "\n")
    for arm in (prefix + arm for prefix in generators for arm in ("plain", "guarded")):
        line = ", ".join(f"{k} {v['mean']:.2f} [{v['low']:.2f}, {v['high']:.2f}] (n={v['n']})"
                         for k, v in result[arm].items() if v["mean"] is not None)
        print(f"{args.set} {arm}: {line}")


def _score(row, raw, answer, hits, evidence_in_text, fact_recall, token_f1, is_abstention) -> dict:
    answerable = bool(row.get("answerable", True))
    scored = {"id": row["id"], "answerable": answerable, "plain_answer": raw, "answer": answer.answer,
              "kind": answer.kind}
    for arm, text, abstained in (("plain", raw, is_abstention(raw)),
                                 ("guarded", answer.answer, answer.kind == "abstained" or is_abstention(answer.answer))):
        s: dict = {}
        if answerable:
            s["false_abstention"] = float(abstained)
            if row.get("facts"):
                s["fact_recall"] = fact_recall(text, row["facts"])
            if row.get("answer"):
                s["token_f1"] = token_f1(text, row["answer"])
            if not abstained:
                cited = _cited_sentences(arm, text, answer)
                s["cites"] = float(bool(cited))
                if cited and row.get("evidence"):
                    holds = [any(evidence_in_text(row["evidence"], hits[n - 1].text) for n in numbers)
                             for numbers in cited]
                    in_entry = [any(_in_gold_entry(row, hits[n - 1]) for n in numbers) for numbers in cited]
                    s["citation_correct"] = sum(map(max, holds, in_entry)) / len(cited)
                    s["citation_holds_evidence"] = sum(holds) / len(cited)
        else:
            s["abstention"] = float(abstained)
        scored[arm] = s
    return scored


def _in_gold_entry(row: dict, hit) -> bool:
    """On an FAQ set the judged document is the whole entry: its heading is the question. A chunk
    under that heading in the row's source file is a passage of the relevant document."""
    return bool(row.get("entry") and Path(hit.source).name == row.get("source")
                and hit.heading.split(" > ")[-1] == row["question"])


def _cited_sentences(arm: str, text: str, answer) -> list[list[int]]:
    """The passage numbers each citing sentence cites (valid numbers only)."""
    from rag.attribution import cited_numbers, sentences

    n = len(answer.sources)
    if arm == "guarded" and answer.kind == "answer":
        return [[p for p in c.passages if 1 <= p <= n] for c in answer.citations if c.passages]
    return [numbers for span in sentences(text)
            if (numbers := [p for p in cited_numbers(text[span.start:span.end]) if 1 <= p <= n])]


if __name__ == "__main__":
    main()
