"""What adapting the embedding model to a collection buys (plain `rag tune`'s first step), with and without.

The Python FAQ BEIR set (bench/beir_faq.py builds and ingests it), scored per document as there, in
one run: the base model (dense; and the default after `rag tune --no-adapt-embedder`), then the same
collection after what plain `rag tune` does (adapt the embedding model, re-embed, tune on the adapted
vectors: dense, and the default it leaves, i.e. the default settings after `rag tune`). The adaptation
sees only the collection's chunks, never the questions or labels. Also records the cost (training and
re-embedding seconds) and the held-out check, and that the sample corpus is refused (too little text).
Writes bench/results/adapt.json.

    python bench/adapt.py [--work DIR] [--pairs 6000] [--seed 0]
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from beir_faq import FAQ_K, faq_collection, score_documents
from tune import choice_name, machine, provenance, rounded


def scores(settings, beir, doc_of, label: str) -> dict:
    """Dense and the tuned default (mode auto after rag.tune.tune) of the settings' collection, each
    also without the section score (`section_weight` 0: the chunk's cosine alone)."""
    from rag.components import make_embedder, open_collection
    from rag.retriever import Retriever
    from rag.tune import tune

    embedder = make_embedder(settings)
    collection = open_collection(settings, embedder)
    retriever = Retriever(collection, embedder)
    dense = score_documents(lambda q: retriever.search(q, k=FAQ_K, mode="dense"), beir, doc_of, f"{label} dense")
    chunk_only = Retriever(collection, embedder, section_weight=0.0)
    dense_chunk = score_documents(lambda q: chunk_only.search(q, k=FAQ_K, mode="dense"), beir, doc_of,
                                  f"{label} dense, chunk only")
    report = tune(collection, embedder, seed=0)
    tuned = Retriever(collection, embedder)
    default = score_documents(lambda q: tuned.search(q, k=FAQ_K), beir, doc_of, f"{label} tuned")
    tuned_chunk = Retriever(collection, embedder, section_weight=0.0)
    default_chunk = score_documents(lambda q: tuned_chunk.search(q, k=FAQ_K), beir, doc_of, f"{label} tuned, chunk only")
    out = {"model": embedder.name, "section_weight": retriever.section_weight, "dense": rounded(dense, interval=True),
           "tuned_default": rounded(default, interval=True), "tuned_choice": choice_name(report),
           "dense_chunk_only": rounded(dense_chunk, interval=True),
           "tuned_default_chunk_only": rounded(default_chunk, interval=True)}
    collection.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", default=str(ROOT / "data" / "beir" / "python-faq"))
    parser.add_argument("--work", help="folder for the FAQ collection (default: a temporary one, removed after)")
    parser.add_argument("--pairs", type=int, default=6000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "adapt.json"))
    args = parser.parse_args()

    from rag.adapt import AdaptError, adapt_collection
    from rag.settings import load_settings

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench-adapt-"))
    try:
        start = time.perf_counter()
        beir, collection, _, report, doc_of = faq_collection(Path(args.set), work)
        chunks = collection.count()[1]
        collection.close()
        settings = load_settings(environ=os.environ).replace(home=work, collection="faq")
        out = {"benchmark": "adapt", "date": time.strftime("%Y-%m-%d"), "machine": machine(),
               "provenance": provenance([Path(args.set) / "corpus.jsonl", Path(args.set) / "queries.jsonl"]),
               "set": {"queries": sum(1 for q in beir.queries if beir.qrels.get(q)), "chunks": chunks,
                       "ingest_s": round(report.seconds, 1)},
               "base": scores(settings, beir, doc_of, "base")}
        out["adapt"] = adapt_collection(settings, pairs=args.pairs, seed=args.seed, force=False)  # as plain rag tune
        out["adapted"] = scores(settings, beir, doc_of, "adapted")
        out["gain"] = {arm: {name: round(out["adapted"][arm][name][0] - out["base"][arm][name][0], 4)
                             for name in ("ndcg@10", "hit@1")}
                       for arm in ("dense", "tuned_default", "dense_chunk_only", "tuned_default_chunk_only")}
        tuned = out["adapted"]["tuned_default"]
        out["goals"] = {"ndcg@10 >= 0.76": tuned["ndcg@10"][0] >= 0.76, "hit@1 >= 0.60": tuned["hit@1"][0] >= 0.60}
        # The guard: a corpus too small to adapt to is refused with one line, and left as it was.
        sample = load_settings(environ=os.environ).replace(home=work, collection="sample")
        from ingest.pipeline import ingest
        from rag.components import make_chunker, make_embedder, open_collection

        embedder = make_embedder(sample)
        small = open_collection(sample, embedder, create=True)
        ingest([ROOT / "data" / "sample"], small, embedder, make_chunker(sample, embedder))
        small.close()
        try:
            adapt_collection(sample, pairs=args.pairs, seed=args.seed)
            out["sample_refused"] = None
        except AdaptError as exc:
            out["sample_refused"] = str(exc)
        out["seconds"] = round(time.perf_counter() - start, 1)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: out[k] for k in ("base", "adapted", "gain", "goals")}, indent=2))


if __name__ == "__main__":
    main()
