"""Which label-free recipe adapts MiniLM best to the Python FAQ (the recipe `rag tune`'s adaptation uses).

Each recipe trains a fresh copy of the model on pairs drawn by rag.adapt.ict_pairs from the FAQ
collection's own chunks (as the product does), and is then scored with the benchmark's labels:
dense retrieval, document-level nDCG@10 / hit@1 / MRR over the top 30 chunks (as bench/beir_faq.py).
The recipes vary the number of pairs, batch size, learning rate, epochs, the share of answers that
keep their sentence, a symmetric loss and mined hard negatives. Meant for a CUDA GPU (the whole
sweep takes about 7 minutes on an H100; on 2 CPU cores each recipe takes 5-60 minutes), so it runs
in two steps, the second needing only torch and sentence-transformers:

    python bench/adapt_sweep.py export --collection DIR/faq --out PAIRS   # chunks, queries, pairs
    python bench/adapt_sweep.py run --data PAIRS --model MINILM_FOLDER [--limit N | --only I ...]
        [--interpolate A ...] [--out FILE]

DIR/faq is the FAQ collection bench/beir_faq.py --work DIR ingests.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import random
import sqlite3
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def export(collection: Path, out: Path) -> None:
    sys.path.insert(0, str(ROOT))
    from eval.beir import doc_file_name, load_beir
    from rag.adapt import ict_pairs
    from rag.chunking import indexed_text
    from rag.store import StoredChunk

    out.mkdir(parents=True, exist_ok=True)
    beir = load_beir(ROOT / "data" / "beir" / "python-faq")
    doc_of = {doc_file_name(d): d for d in beir.corpus}
    db = sqlite3.connect(collection / "collection.sqlite")
    rows = db.execute('select vid, id, path, page, start, "end", text, heading from chunks order by vid').fetchall()
    chunks = [StoredChunk(*r) for r in rows]
    with gzip.open(out / "chunks.jsonl.gz", "wt") as f:
        for c in chunks:
            f.write(json.dumps({"id": c.id, "doc": doc_of[Path(c.source).name], "heading": c.heading,
                                "text": c.text}) + "\n")
    judged = {q: {"text": beir.queries[q], "relevant": sorted(beir.qrels[q])}
              for q in beir.queries if beir.qrels.get(q)}
    (out / "queries.json").write_text(json.dumps(judged))
    for name, seed, keep in (("s0k1", 0, 0.1), ("s1k1", 1, 0.1), ("s0k5", 0, 0.5)):
        pairs = ict_pairs(chunks, 10**6, seed=seed, keep=keep)  # every sentence: a recipe takes a prefix
        index = {c.id: n for n, c in enumerate(chunks)}
        with gzip.open(out / f"pairs_{name}.jsonl.gz", "wt") as f:  # sentence, chunk, answer kept it whole
            for p in pairs:
                c = chunks[index[p.chunk]]
                f.write(json.dumps([p.question, index[p.chunk], p.answer == indexed_text(c.heading, c.text)]) + "\n")
        print(name, len(pairs))
    print(len(chunks), "chunks", len(judged), "queries")


# (name, pairs file, pairs drawn (a tenth held out, as rag.adapt), training options); "mined": hard negatives
RECIPES = [
    ("default: 6000 pairs, batch 32, lr 2e-5", "s0k1", 6000, dict(batch=32, lr=2e-5)),
    ("default, other seed", "s1k1", 6000, dict(batch=32, lr=2e-5, seed=1)),
    ("6000, batch 64, lr 5e-5", "s0k1", 6000, dict(batch=64, lr=5e-5)),
    ("6000, batch 128, lr 1e-4", "s0k1", 6000, dict(batch=128, lr=1e-4)),
    ("all, batch 128, lr 5e-5", "s0k1", None, dict(batch=128, lr=5e-5)),
    ("all, batch 256, lr 1e-4", "s0k1", None, dict(batch=256, lr=1e-4)),
    ("20000, batch 64, lr 5e-5", "s0k1", 20000, dict(batch=64, lr=5e-5)),
    ("6000, 3 epochs", "s0k1", 6000, dict(batch=32, lr=2e-5, epochs=3)),
    ("6000, half the answers keep their sentence", "s0k5", 6000, dict(batch=32, lr=2e-5)),
    ("6000, symmetric loss", "s0k1", 6000, dict(batch=32, lr=2e-5, loss="symmetric")),
    ("6000, mined hard negatives", "s0k1", 6000, dict(batch=32, lr=2e-5, mined=True)),
    ("all, mined hard negatives, batch 128, lr 5e-5", "s0k1", None, dict(batch=128, lr=5e-5, mined=True)),
    ("all, batch 32, lr 2e-5", "s0k1", None, dict(batch=32, lr=2e-5)),
    ("all, batch 512, lr 2e-4", "s0k1", None, dict(batch=512, lr=2e-4)),
    # cheaper steps on a CPU (half the time per step at 128 tokens, two thirds with 3 layers frozen)
    ("default, trained at 128 tokens", "s0k1", 6000, dict(batch=32, lr=2e-5, max_length=128)),
    ("default, trained at 128 tokens, other seed", "s1k1", 6000, dict(batch=32, lr=2e-5, max_length=128, seed=1)),
    ("default, embeddings and first 3 layers frozen", "s0k1", 6000, dict(batch=32, lr=2e-5, freeze=3)),
    ("default, first 3 layers frozen, other seed", "s1k1", 6000, dict(batch=32, lr=2e-5, freeze=3, seed=1)),
    ("default, at 128 tokens, first 3 layers frozen", "s0k1", 6000, dict(batch=32, lr=2e-5, max_length=128, freeze=3)),
    ("default, at 128 tokens, first 3 layers frozen, other seed", "s1k1", 6000,
     dict(batch=32, lr=2e-5, max_length=128, freeze=3, seed=1)),
    ("default, embeddings and first 2 layers frozen", "s0k1", 6000, dict(batch=32, lr=2e-5, freeze=2)),
]


def run(data: Path, model_path: str, out_file: Path, limit: int | None = None,
        interpolate: list[float] | None = None, only: list[int] | None = None) -> None:
    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import batch_to_device
    from transformers import get_linear_schedule_with_warmup

    try:
        from sentence_transformers.sentence_transformer.losses import (
            MultipleNegativesRankingLoss,
            MultipleNegativesSymmetricRankingLoss,
        )
    except ImportError:  # sentence-transformers before 6.1
        from sentence_transformers.losses import MultipleNegativesRankingLoss, MultipleNegativesSymmetricRankingLoss

    device = "cuda" if torch.cuda.is_available() else "cpu"
    chunks = [json.loads(line) for line in gzip.open(data / "chunks.jsonl.gz", "rt")]
    indexed = [f"{c['heading']}\n{c['text']}" if c["heading"] else c["text"] for c in chunks]
    docs = [c["doc"] for c in chunks]
    files = [d.split("#")[0] for d in docs]
    queries = json.loads((data / "queries.json").read_text())
    questions = [q["text"] for q in queries.values()]
    relevant = [set(q["relevant"]) for q in queries.values()]

    def load_pairs(name: str) -> list[tuple[str, str, int]]:
        pairs = []
        for line in gzip.open(data / f"pairs_{name}.jsonl.gz", "rt"):
            sentence, j, kept = json.loads(line)
            c = chunks[j]
            text = c["text"] if kept else " ".join(c["text"].replace(sentence, " ", 1).split())
            pairs.append((sentence, f"{c['heading']}\n{text}" if c["heading"] else text, j))
        return pairs

    def encode(model, texts):
        with torch.inference_mode(), torch.autocast(device, dtype=torch.bfloat16):
            vectors = model.encode(texts, batch_size=256, convert_to_tensor=True).float()
        return torch.nn.functional.normalize(vectors, dim=-1)

    def score(model) -> dict:
        top = torch.topk(encode(model, questions) @ encode(model, indexed).T, 30, dim=1).indices.cpu().numpy()
        ndcg, hit1, rr = [], [], []
        for row, rel in zip(top, relevant):
            ranked = list(dict.fromkeys(docs[i] for i in row))[:10]
            found = [k for k, d in enumerate(ranked) if d in rel]
            ideal = sum(1 / math.log2(k + 2) for k in range(min(len(rel), 10)))
            ndcg.append(sum(1 / math.log2(k + 2) for k in found) / ideal)
            hit1.append(1.0 if found and found[0] == 0 else 0.0)
            rr.append(1 / (found[0] + 1) if found else 0.0)
        return {"ndcg@10": round(float(np.mean(ndcg)), 4), "hit@1": round(float(np.mean(hit1)), 4),
                "mrr": round(float(np.mean(rr)), 4)}

    def mine(model, pairs, depth=30, skip=3):
        """A hard negative for each pair: a chunk of another file that the base model ranks high (past the
        first `skip`, which may be unlabelled answers)."""
        top = torch.topk(encode(model, [p[0] for p in pairs]) @ encode(model, indexed).T, depth, dim=1)
        rows = []
        for (question, answer, j), row in zip(pairs, top.indices.cpu().numpy()):
            others = [i for i in row if files[i] != files[j]][skip:]
            rows.append((question, answer, indexed[others[0] if others else row[-1]]))
        return rows

    def train(model, rows, batch, lr, epochs=1, loss="mnrl", seed=0, mined=False, max_length=None, freeze=0) -> int:
        torch.manual_seed(seed)
        scoring_length = model.max_seq_length
        if max_length:  # texts cut to this many tokens while training; scored at the model's own length
            model.max_seq_length = max_length
        if freeze:  # the embeddings and the first `freeze` layers keep their weights
            bert = model[0].auto_model
            for module in [bert.embeddings, *bert.encoder.layer[:freeze]]:
                for parameter in module.parameters():
                    parameter.requires_grad = False
        order = list(rows)
        random.Random(seed).shuffle(order)
        batches = [order[at:at + batch] for at in range(0, len(order) - batch + 1, batch)] * epochs
        loss_class = MultipleNegativesSymmetricRankingLoss if loss == "symmetric" else MultipleNegativesRankingLoss
        loss_fn = loss_class(model)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
        schedule = get_linear_schedule_with_warmup(optimizer, max(1, len(batches) // 10), len(batches))
        preprocess = getattr(model, "preprocess", None) or model.tokenize
        model.train()
        for part in batches:
            features = [batch_to_device(preprocess(list(column)), model.device) for column in zip(*part)]
            with torch.autocast(device, dtype=torch.bfloat16):
                loss_value = loss_fn(features, None)
            loss_value.backward()
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
        model.eval()
        model.max_seq_length = scoring_length
        return len(batches)

    def fresh():  # float32 weights, bfloat16 autocast, as rag.adapt
        return SentenceTransformer(model_path, device=device, model_kwargs={"dtype": torch.float32})

    pairs = {name: load_pairs(name) for name in {r[1] for r in RECIPES}}
    results = {"date": time.strftime("%Y-%m-%d"),
               "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu", "torch": torch.__version__,
               "chunks": len(chunks), "queries": len(questions), "recipes": {}}
    base = fresh()
    results["base"] = score(base)
    print("base", results["base"], flush=True)
    chosen = [RECIPES[i] for i in only] if only else RECIPES[:limit]
    for name, source, drawn, options in chosen:
        drawn = drawn or len(pairs[source])
        used = pairs[source][max(1, drawn // 10):drawn]
        start = time.perf_counter()
        rows = mine(base, used) if options.get("mined") else [(q, a) for q, a, _ in used]
        model = fresh()
        steps = train(model, rows, **options)
        result = score(model) | {"pairs": len(rows), "steps": steps, "train_s": round(time.perf_counter() - start, 1),
                                 **options}
        if interpolate:  # weight-space ensembles of the copy and the base (WiSE-FT; above 1: extrapolated)
            base_state, tuned_state = base.state_dict(), model.state_dict()
            result["interpolated"] = {}
            for alpha in interpolate:
                mixed = fresh()
                mixed.load_state_dict({key: alpha * value + (1 - alpha) * base_state[key]
                                       if value.is_floating_point() else value for key, value in tuned_state.items()})
                result["interpolated"][str(alpha)] = score(mixed)
                del mixed
        results["recipes"][name] = result
        print(name, result, flush=True)
        out_file.write_text(json.dumps(results, indent=1) + "\n")
        del model
        if device == "cuda":
            torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="step", required=True)
    e = sub.add_parser("export")
    e.add_argument("--collection", required=True, type=Path)
    e.add_argument("--out", required=True, type=Path)
    r = sub.add_parser("run")
    r.add_argument("--data", required=True, type=Path)
    r.add_argument("--model", required=True)
    r.add_argument("--out", default=ROOT / "bench" / "results" / "adapt_sweep.json", type=Path)
    r.add_argument("--limit", type=int, help="only the first N recipes")
    r.add_argument("--only", type=int, nargs="*", metavar="I", help="only these recipes (0-based indexes into RECIPES)")
    r.add_argument("--interpolate", type=float, nargs="*", metavar="ALPHA",
                   help="also score each copy's weights mixed with the base's: ALPHA * copy + (1 - ALPHA) * base")
    args = parser.parse_args()
    if args.step == "export":
        export(args.collection, args.out)
    else:
        run(args.data, args.model, args.out, args.limit, args.interpolate, args.only)


if __name__ == "__main__":
    main()
