"""The embedding model's precision, measured: float32 against bfloat16 (what `embedding_dtype = "auto"`
picks on a CPU with AVX512-BF16 or AMX), side by side in one run.

- Speed: chunks/s of each on the same 400 chunks of the Python FAQ collection, three interleaved
  rounds (the median is reported), and the cosine of each bf16 vector to its fp32 twin.
- Quality: the FAQ collection in the default precision (as bench/beir_faq.py builds it: with
  `--work` the one it left there is reused, else it is built here), then a copy re-embedded in the
  other precision with `rag ingest --reembed`'s code (its chunks/s reported too); document-level
  nDCG@10 and hit@1 of dense and hybrid retrieval on the 179 judged FAQ queries, and on the sample
  corpus the answerable questions whose evidence is in the first chunk. Goal: within 0.01 nDCG@10 of
  float32.

    python bench/embedding.py [--work FOLDER] [--carry-reembedded] [--out bench/results/embedding.json]

`make bench` passes --carry-reembedded: the FAQ in the other precision (its re-embedding speed and
retrieval scores) comes from the last full run (`make bench-all`), dated by "reembedded_measured".
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
DTYPES = ("float32", "bfloat16")


def speed(embedders: dict, texts: list[str], rounds: int = 3) -> dict:
    rates = {name: [] for name in embedders}
    for _ in range(rounds):
        for name, embedder in embedders.items():
            start = time.perf_counter()
            embedder.embed(texts)
            rates[name].append(len(texts) / (time.perf_counter() - start))
    return {name: {"chunks_per_s": round(statistics.median(r), 1), "rounds": [round(x, 1) for x in r]}
            for name, r in rates.items()}


def sample_rank1(embedder, modes=("dense", "hybrid")) -> dict:
    """Answerable sample questions whose evidence sentence is in the first retrieved chunk."""
    from bench.corpus import scratch_collection
    from eval.metrics import evidence_in_text
    from rag.jsonl import read_jsonl
    from rag.retriever import Retriever
    from rag.settings import Settings

    rows = [row for _, row in read_jsonl(ROOT / "data" / "sample" / "qa.jsonl") if row.get("answerable", True)]
    collection = scratch_collection(f"sample-{embedder.dtype}", [ROOT / "data" / "sample"], Settings(), embedder)
    retriever = Retriever(collection, embedder)
    return {mode: sum(evidence_in_text(row["evidence"], retriever.search(row["question"], k=1, mode=mode)[0].text)
                      for row in rows) for mode in modes} | {"questions": len(rows)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", default=str(ROOT / "data" / "beir" / "python-faq"))
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "embedding.json"))
    parser.add_argument("--work", help="the folder bench/beir_faq.py --work built the FAQ collection in, or one to "
                                       "keep it in between runs (default: a temporary folder)")
    parser.add_argument("--carry-reembedded", action="store_true",
                        help="do not re-embed the FAQ in the other precision (about 9 minutes in float32 here): "
                             "carry its figures over from --out's last run, with the date it measured them")
    parser.add_argument("--speed-only", action="store_true",
                        help="measure the speed again (--work's collection) and update it in --out")
    args = parser.parse_args()

    from bench.beir_faq import faq_collection, score_documents
    from bench.machine import describe
    from ingest.pipeline import reembed
    from rag.embedding import SentenceTransformerEmbedder, cpu_has_bf16, pick_dtype
    from rag.retriever import Retriever
    from rag.store import Collection

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench-embedding-"))
    work.mkdir(parents=True, exist_ok=True)
    embedders = {dtype: SentenceTransformerEmbedder(device="cpu", dtype=dtype) for dtype in DTYPES}
    beir, collection, _, report, doc_of = faq_collection(Path(args.set), work)
    _, texts = collection.all_texts()
    chunks = texts[:: max(1, len(texts) // 400)][:400]

    last = json.loads(Path(args.out).read_text()) if Path(args.out).is_file() else {}
    out = dict(last) if args.speed_only else {}
    out.update({"benchmark": "embedding", "date": time.strftime("%Y-%m-%d"), "machine": describe(),
                "cpu_has_bf16": cpu_has_bf16(), "auto_on_this_cpu": pick_dtype("auto", "cpu"),
                "speed": speed(embedders, chunks), "chunks_timed": len(chunks)})
    out["speed"]["bfloat16_over_float32"] = round(
        out["speed"]["bfloat16"]["chunks_per_s"] / out["speed"]["float32"]["chunks_per_s"], 2)
    if args.speed_only:
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
        print(json.dumps(out["speed"], indent=2))
        return
    import numpy as np

    full, half = embedders["float32"].embed(chunks), embedders["bfloat16"].embed(chunks)
    cosines = np.sum(full * half, axis=1)
    out["cosine_bf16_to_fp32"] = {"min": round(float(cosines.min()), 5), "mean": round(float(cosines.mean()), 5)}

    # the collection is in the default precision; a copy is re-embedded in the other one
    built = collection.embedding_dtype or "float32"
    other = next(dtype for dtype in DTYPES if dtype != built)
    out["faq"] = {"queries": sum(1 for q in beir.queries if beir.qrels.get(q)), "chunks": len(texts)}
    carried = {f"{other} {mode}": last.get("faq", {}).get(f"{other} {mode}") for mode in ("dense", "hybrid")}
    if args.carry_reembedded and all(carried.values()) and last.get("reembed", {}).get("embedding_dtype") == other:
        out["reembed"] = last["reembed"]
        out["reembedded_measured"] = last.get("reembedded_measured", last.get("date"))
        out["faq"].update(carried)
        collections = {built: collection}
    else:
        copy = work / f"faq-{other}"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(collection.folder, copy, ignore=shutil.ignore_patterns("*.lock"))
        converted = reembed(Collection.open(copy), embedders[other])
        out["reembed"] = {**converted, "chunks_per_s": round(converted["chunks"] / converted["seconds"], 1)}
        out["reembedded_measured"] = time.strftime("%Y-%m-%d")
        collections = {built: collection, other: Collection.open(copy)}
    for dtype, coll in collections.items():
        retriever = Retriever(coll, embedders[dtype])
        for mode in ("dense", "hybrid"):
            scores = score_documents(lambda q, mode=mode: retriever.search(q, k=30, mode=mode), beir, doc_of,
                                     desc=f"{dtype} {mode}")
            out["faq"][f"{dtype} {mode}"] = {"ndcg@10": round(scores["ndcg@10"]["mean"], 4),
                                             "hit@1": round(scores["hit@1"]["mean"], 4)}
    out["faq"]["ndcg@10 change, dense"] = round(
        out["faq"]["bfloat16 dense"]["ndcg@10"] - out["faq"]["float32 dense"]["ndcg@10"], 4)
    out["faq"]["ndcg@10 change, hybrid"] = round(
        out["faq"]["bfloat16 hybrid"]["ndcg@10"] - out["faq"]["float32 hybrid"]["ndcg@10"], 4)
    out["sample_evidence_at_rank_1"] = {dtype: sample_rank1(embedder) for dtype, embedder in embedders.items()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
