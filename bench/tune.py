"""How close `rag tune`'s label-free choice comes to the choice real labels make, and what it buys.

Two labelled sets, each measured untuned (the defaults: hybrid, equal weights) and tuned (mode auto
after `rag.tune.tune`) in the same run, the tuned default also without the section score
(`section_weight` 0):
- the Python FAQ BEIR set (bench/beir_faq.py builds and ingests it), scored per document as there;
  every candidate of the tuning grid is also scored with the real labels, giving the labelled choice;
- the sample corpus (data/sample, data/sample/qa.jsonl): evidence in the rank-1 chunk.
The tuned abstain threshold is checked on the real questions: false abstention on the answerable
ones, abstention on the sample's unanswerable ones. Writes bench/results/tune.json.

    python bench/tune.py [--work DIR]   # a kept DIR skips the 5-10 min FAQ ingest on reruns
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import shutil
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

UNTUNED = {"default_mode": "", "fusion_weights": "", "abstain_threshold": "", "tune": ""}  # what no tune leaves
PACKAGES = ("torch", "sentence-transformers", "faiss-cpu", "bm25s", "numpy", "transformers")


def machine() -> dict:
    from bench.machine import describe

    return describe() | {"load_average_at_start": os.getloadavg()[0]}


def provenance(paths: list[Path]) -> dict:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False).stdout.strip()

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return {"git_sha": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain")), "packages": versions,
            "data_sha256": {(str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)):
                            hashlib.sha256(p.read_bytes()).hexdigest()[:16] for p in paths}}


def rounded(scores: dict, interval: bool = False) -> dict:
    """score_documents' results, rounded; means only unless `interval` (then [mean, low, high])."""
    return {m: ((round(v["mean"], 4) if not interval else [round(v[key], 4) for key in ("mean", "low", "high")])
                if isinstance(v, dict) else round(v, 2)) for m, v in scores.items()}


def choice_name(report) -> str:
    return report.mode if report.mode != "hybrid" else f"hybrid {report.weights[0]:g}:{report.weights[1]:g}"


def corrections(collection, embedder, args, real_score) -> dict:
    """The label-free choice under each correction of the synthetic questions, and its real score."""
    from rag.tune import CORRECTIONS, tune

    out = {}
    for correction in CORRECTIONS:
        report = tune(collection, embedder, questions=args.questions, seed=args.seed, k=args.k, record=False,
                      neutral=None, correction=correction)
        out[correction] = {"choice": choice_name(report), "real": real_score(choice_name(report)),
                           "synthetic_ndcg@10": {c.name: round(c.scores["ndcg@10"], 4) for c in report.candidates}}
    return out


def faq(args, model: dict) -> dict:
    from rag.retriever import Retriever
    from rag.tune import best_cosine, candidates, rank, tune

    beir, collection, embedder, _, doc_of = faq_collection(Path(args.set), Path(args.work) / "faq-work")
    model["name"] = embedder.name
    collection.set_meta(UNTUNED)
    judged = {qid: beir.queries[qid] for qid in beir.queries if beir.qrels.get(qid)}
    untuned = Retriever(collection, embedder)
    out = {"set": {"queries": len(judged), "corpus_docs": len(beir.corpus), "chunks": collection.count()[1]}}
    out["untuned_default"] = rounded(score_documents(lambda q: untuned.search(q, k=FAQ_K), beir, doc_of, "untuned"), interval=True)

    # Every candidate with the real labels, from one dense and one BM25 ranking per query, each as
    # deep as Retriever.search(k=FAQ_K, mode="hybrid") fuses (so the fused lists are identical).
    pool = max(FAQ_K * 4, 20)
    cached = {q: (untuned.search(q, k=pool, mode="dense"), untuned.search(q, k=pool, mode="bm25"))
              for q in judged.values()}
    labelled = {}
    for candidate in candidates():
        def search(q, candidate=candidate):
            dense, bm25 = cached[q]
            by_id = {h.chunk_id: h for h in dense + bm25}
            return [by_id[cid] for cid in rank(candidate, dense, bm25, depth=FAQ_K)]
        labelled[candidate.name] = rounded(score_documents(search, beir, doc_of, candidate.name))
    best_single = max(("dense", "bm25"), key=lambda name: labelled[name]["ndcg@10"])

    def found(hits, qid) -> bool:
        return any(doc_of[Path(h.source).name] in beir.qrels[qid] for h in hits[:FAQ_K])

    # The most a reranker of the first FAQ_K chunks could give: the relevant document is among them.
    headroom = {mode: sum(found(cached[q][i], qid) for qid, q in judged.items()) / len(judged)
                for i, mode in enumerate(("dense", "bm25"))}

    start = time.perf_counter()
    tuned_report = tune(collection, embedder, questions=args.questions, seed=args.seed, k=args.k)
    tune_s = time.perf_counter() - start
    tuned = Retriever(collection, embedder)  # reads what tune recorded; mode auto
    out["tuned_default"] = rounded(score_documents(lambda q: tuned.search(q, k=FAQ_K), beir, doc_of, "tuned"), interval=True)
    chunk_only = Retriever(collection, embedder, section_weight=0.0)  # the same, without the section score
    out["tuned_default_chunk_only"] = rounded(score_documents(lambda q: chunk_only.search(q, k=FAQ_K), beir, doc_of,
                                                              "tuned, chunk only"), interval=True)
    cosines = [best_cosine(tuned.search(q, k=args.k)) for q in judged.values()]  # the gate's score, real questions
    out.update({
        "tune": tuned_report.as_dict(), "tune_s": round(tune_s, 1), "labelled": labelled,
        "labelled_choice": max(labelled, key=lambda name: (labelled[name]["ndcg@10"], labelled[name]["hit@1"])),
        "label_free_choice": choice_name(tuned_report), "label_free_hybrid_weights": list(tuned_report.weights),
        "best_single_mode": best_single, "relevant_doc_in_first_30_chunks": headroom,
        "real_false_abstention": sum(c < tuned_report.threshold for c in cosines) / len(cosines),
        # After `rag tune --no-adapt-embedder`; plain `rag tune`, which adapts the model first: adapt.json.
        "goals": {"ndcg@10 >= 0.76": out["tuned_default"]["ndcg@10"][0] >= 0.76,
                  "hit@1 >= 0.60": out["tuned_default"]["hit@1"][0] >= 0.60,
                  "default ndcg@10 >= best single mode's":
                      out["tuned_default"]["ndcg@10"][0] >= labelled[best_single]["ndcg@10"]},
        "corrections": corrections(collection, embedder, args, lambda name: labelled[name]),
    })
    # Is the label-free choice stable across draws of synthetic questions?
    out["choice_by_seed"] = {args.seed: [tuned_report.mode, list(tuned_report.weights), tuned_report.threshold]}
    for seed in range(args.seeds):
        if seed != args.seed:
            again = tune(collection, embedder, questions=args.questions, seed=seed, k=args.k, record=False,
                         neutral=None)
            out["choice_by_seed"][seed] = [again.mode, list(again.weights), again.threshold]
    return out


def sample(args) -> dict:
    from eval.runner import read_qa, relevant_chunks
    from ingest.pipeline import ingest
    from rag.components import make_chunker, make_embedder
    from rag.retriever import Retriever
    from rag.settings import load_settings
    from rag.store import Collection
    from rag.tune import POOL, best_cosine, candidates, first_hits, tune

    settings = load_settings(environ=os.environ)
    embedder = make_embedder(settings)
    folder = Path(args.work) / "sample"
    shutil.rmtree(folder, ignore_errors=True)
    collection = Collection.open(folder, embedder.name, embedder.dim, create=True)
    ingest([ROOT / "data" / "sample"], collection, embedder, make_chunker(settings, embedder))
    questions = read_qa(ROOT / "data" / "sample" / "qa.jsonl")
    answerable = [q for q in questions if q.get("answerable", True)]
    relevant = relevant_chunks(collection, answerable)

    def first_is_evidence(hits, q) -> bool:
        return bool(hits) and hits[0].chunk_id in relevant[q["id"]]

    def at_rank_1(retriever) -> int:
        return sum(first_is_evidence(retriever.search(q["question"], k=1), q) for q in answerable)

    untuned = Retriever(collection, embedder)
    cached = {q["id"]: (untuned.search(q["question"], k=POOL, mode="dense"),
                        untuned.search(q["question"], k=POOL, mode="bm25")) for q in answerable}
    labelled = {c.name: sum(first_is_evidence(first_hits(c, *cached[q["id"]], 1), q) for q in answerable)
                for c in candidates()}
    # The most a reranker of the first 3 (or 10) chunks could give: the evidence is among them.
    headroom = {depth: {mode: sum(any(h.chunk_id in relevant[q["id"]] for h in cached[q["id"]][i][:depth])
                                  for q in answerable) for i, mode in enumerate(("dense", "bm25"))}
                for depth in (3, 10)}
    out = {"questions": len(questions), "answerable": len(answerable), "chunks": collection.count()[1],
           "rank1_untuned_default": at_rank_1(untuned), "rank1_labelled": labelled,
           "evidence_in_first": headroom}
    report = tune(collection, embedder, questions=args.questions, seed=args.seed, k=args.k)
    tuned = Retriever(collection, embedder)
    cosine = {q["id"]: best_cosine(tuned.search(q["question"], k=args.k)) for q in questions}
    rank1 = at_rank_1(tuned)
    out.update({
        "tune": report.as_dict(), "rank1_tuned_default": rank1,
        "rank1_tuned_default_chunk_only": at_rank_1(Retriever(collection, embedder, section_weight=0.0)), "label_free_choice": choice_name(report),
        "label_free_hybrid_weights": list(report.weights),
        "real_false_abstention": sum(cosine[q["id"]] < report.threshold for q in answerable) / len(answerable),
        "unanswerable_abstained": {q["id"]: cosine[q["id"]] < report.threshold for q in questions
                                   if not q.get("answerable", True)},
        # The goal was filed against the defaults of the day ("today 17", before tune existed); the figure
        # after tune is judged too, and BENCHMARKS says why it is one question short.
        "goals": {"rank-1 evidence >= 19 of 20, default settings": out["rank1_untuned_default"] >= 19,
                  "rank-1 evidence >= 19 of 20, after rag tune": rank1 >= 19},
        "corrections": corrections(collection, embedder, args, lambda name: labelled[name]),
    })
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", default=str(ROOT / "data" / "beir" / "python-faq"))
    parser.add_argument("--work", help="scratch folder, kept (default: a new temporary folder)")
    parser.add_argument("--questions", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, default=3, help="FAQ: also re-run tune with seeds 0..N-1 (not recorded)")
    parser.add_argument("--k", type=int, default=3, help="hits the abstain gate looks at (Settings.k)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "tune.json"))
    args = parser.parse_args()
    args.work = args.work or tempfile.mkdtemp(prefix="bench-tune-")
    start = time.perf_counter()
    model: dict = {}
    results = {"benchmark": "tune", "date": time.strftime("%Y-%m-%d"), "machine": machine()}
    results["sample"] = sample(args)
    results["faq"] = faq(args, model)
    results.update(embedding_model=model.get("name"), seconds=round(time.perf_counter() - start),
                   provenance=provenance([Path(args.set) / "corpus.jsonl", ROOT / "data" / "sample" / "qa.jsonl",
                                          ROOT / "rag" / "data" / "neutral_questions.txt"]))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({name: results[name].get("goals") for name in ("sample", "faq")}, indent=2))


if __name__ == "__main__":
    main()
