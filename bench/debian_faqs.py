"""A second FAQ retrieval set, from other documents: the section score with and without.

The FAQs of five Debian documentation packages (zsh-doc, git-doc, fetchmail, sqlite3-doc, vim-doc;
fetched by scripts/reader_corpus.py, the reader adapter's documents; no other benchmark or eval set
uses them, and neither `debian-faq` nor `perl-doc`). Built as bench/beir_faq.py's set is: the pages are
ingested once to find their sections; every section whose heading asks a question gives a query (the
heading, its numbering dropped) and its relevant document (the section's text without the question);
every other section is a document too (a distractor). The documents are then ingested as one file
each, so that, as in the Python FAQ set, no heading repeats the question, and rankings are scored per
document: hit@1, hit@3, MRR, nDCG@10 with 95 % intervals, for dense and hybrid at each section weight
of WEIGHTS (0: the chunk's cosine alone) and BM25, in one run; over all questions, and over those
whose answer spans two chunks or more (the only ones the section score can move). With --adapt,
then the same collection adapted as `rag tune` adapts it first, and scored again (dense).
Writes bench/results/debian_faqs.json.

    python bench/debian_faqs.py [--work DIR] [--adapt]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from beir_faq import FAQ_K, score_documents
from machine import describe
from tune import rounded

WEIGHTS = (0.0, 0.1, 0.3, 0.5)
MIN_ANSWER_WORDS = 8  # an answer shorter than this ("Yes.") is no document to find


def sections(collection) -> list[tuple[str, str, str]]:
    """(source, heading path, text) of each section of the ingested pages, in order; the text is the
    section's span of its page, rebuilt from its chunks' exact spans (they overlap)."""
    found: dict[tuple[str, str], list] = {}
    for chunk in collection.all_chunks():  # by source, then start
        found.setdefault((chunk.source, chunk.heading), []).append(chunk)
    out = []
    for (source, heading), chunks in found.items():
        text, end = "", None
        for chunk in chunks:
            if end is None or chunk.start >= end:
                text += ("\n" if text else "") + chunk.text
            elif chunk.end > end:
                text += chunk.text[end - chunk.start:]
            end = max(end or 0, chunk.end)
        out.append((source, heading, text))
    return out


def build_set(docs: Path, work: Path, settings, embedder):
    """The BeirSet made from the FAQ pages in `docs`."""
    from bench.corpus import scratch_collection
    from eval.beir import BeirSet
    from rag.finetune_data import heading_question

    pages = scratch_collection("pages", [docs], settings, embedder)
    corpus, queries, qrels = {}, {}, {}
    first = {(c.source, c.heading): c for c in reversed(pages.all_chunks())}  # each section's first chunk
    for n, (source, heading, text) in enumerate(sections(pages)):
        chunk = replace(first[source, heading], text=text)
        asked = heading_question(chunk)
        body = asked[1].text if asked else text
        if len(body.split()) < MIN_ANSWER_WORDS:
            continue
        doc_id = f"{Path(source).name}#{n}"
        corpus[doc_id] = {"title": "", "text": body}
        if asked:
            qid = f"q{len(queries):04d}"
            queries[qid] = asked[0]
            qrels[qid] = {doc_id: 1}
    shutil.rmtree(pages.folder.parent, ignore_errors=True)
    return BeirSet(corpus, queries, qrels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", help="scratch folder, kept (default: a temporary one, removed after)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "debian_faqs.json"))
    parser.add_argument("--adapt", action="store_true",
                        help="then adapt the embedding model to the set (as rag tune does; ~5 min) and score again")
    args = parser.parse_args()

    from eval.beir import BeirSet, doc_file_name, write_corpus_files
    from ingest.pipeline import ingest
    from rag.components import make_chunker, make_embedder
    from rag.retriever import Retriever
    from rag.settings import Settings
    from rag.store import Collection

    start = time.perf_counter()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench-debian-faqs-"))
    try:
        subprocess.run([sys.executable, str(ROOT / "scripts" / "reader_corpus.py"), "--out", str(work / "pages")],
                       check=True)
        settings = Settings()
        embedder = make_embedder(settings)
        beir = build_set(work / "pages", work, settings, embedder)
        write_corpus_files(beir, work / "docs")
        doc_of = {doc_file_name(doc_id): doc_id for doc_id in beir.corpus}
        collection = Collection.open(work / "faqs", embedder.name, embedder.dim, create=True)
        report = ingest([work / "docs"], collection, embedder, make_chunker(settings, embedder))
        # The questions whose answer spans several chunks: the only ones the section score can move.
        chunks_of = {doc_of[Path(source).name]: n for source, n in collection.db.execute(
            "SELECT path, COUNT(*) FROM chunks GROUP BY path")}
        long = BeirSet(beir.corpus, {q: t for q, t in beir.queries.items()
                                     if chunks_of[next(iter(beir.qrels[q]))] > 1}, beir.qrels)
        results: dict = {"all questions": {}, "answer of 2+ chunks": {}}
        bm25 = Retriever(collection, embedder)  # one retriever: its BM25 index is loaded once
        for name, subset in (("all questions", beir), ("answer of 2+ chunks", long)):
            results[name]["bm25"] = rounded(score_documents(
                lambda q: bm25.search(q, k=FAQ_K, mode="bm25"), subset, doc_of, "bm25"), interval=True)
            for weight in WEIGHTS:
                retriever = Retriever(collection, embedder, section_weight=weight)
                for mode in ("dense", "hybrid"):
                    results[name][f"{mode}, section_weight {weight:g}"] = rounded(score_documents(
                        lambda q, mode=mode: retriever.search(q, k=FAQ_K, mode=mode), subset, doc_of,
                        f"{mode} {weight:g}"), interval=True)
        collection.close()
        if args.adapt:  # rag tune's adaptation, then dense again on the new vectors
            from rag.adapt import adapt_collection
            from rag.components import open_collection

            adapted_settings = settings.replace(home=work, collection="faqs")
            adapt = adapt_collection(adapted_settings)
            adapted_embedder = make_embedder(adapted_settings)
            adapted = open_collection(adapted_settings, adapted_embedder)
            results["adapted embedder"] = {"adapt": {k: adapt[k] for k in ("model", "kept", "pairs", "train_s",
                                                                         "reembed_s", "held_out_mrr")}}
            for weight in WEIGHTS:
                retriever = Retriever(adapted, adapted_embedder, section_weight=weight)
                results["adapted embedder"][f"dense, section_weight {weight:g}"] = rounded(score_documents(
                    lambda q: retriever.search(q, k=FAQ_K, mode="dense"), beir, doc_of, f"adapted {weight:g}"),
                    interval=True)
            adapted.close()
        out = {"benchmark": "debian_faqs", "date": time.strftime("%Y-%m-%d"), "machine": describe(),
               "set": {"queries": len(beir.queries), "queries_answer_of_2+_chunks": len(long.queries),
                       "corpus_docs": len(beir.corpus),
                       "chunks": report.chunks_added, "ingest_s": round(report.seconds, 1)},
               "results": results, "seconds": round(time.perf_counter() - start, 1)}
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out["set"] | {name: {k: {m: v[m][0] for m in ("ndcg@10", "hit@1")} for k, v in arms.items()
                                          if k != "adapt"} for name, arms in results.items()}, indent=2))


if __name__ == "__main__":
    main()
