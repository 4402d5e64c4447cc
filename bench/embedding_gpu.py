"""The embedder on a CUDA GPU: float32 against float16 (what `embedding_dtype = "auto"` picks there),
and both against float32 vectors of the same chunks computed on a CPU.

Two steps, because the GPU machine need not have the collection: `--prepare` (on any machine) writes
the chunk texts of a collection and their CPU float32 vectors; the run (on the GPU) embeds the same
texts in three interleaved rounds per precision (bench/embedding.py's `speed`) and writes the median chunks/s and cosine to the CPU vectors.

    python bench/embedding_gpu.py --prepare -c reader --work /tmp/emb          # CPU
    python bench/embedding_gpu.py --work /tmp/emb [--model FOLDER]             # GPU
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def prepare(collection: str, work: Path, n: int) -> None:
    import numpy as np

    from rag.embedding import SentenceTransformerEmbedder
    from rag.settings import load_settings

    settings = load_settings(environ=os.environ)
    db = sqlite3.connect(settings.home / collection / "collection.sqlite")
    texts = [row[0] for row in db.execute("SELECT text FROM chunks ORDER BY vid")]
    texts = (texts * (n // max(len(texts), 1) + 1))[:n]
    embedder = SentenceTransformerEmbedder(settings.embedding_model, device="cpu", dtype="float32")
    work.mkdir(parents=True, exist_ok=True)
    (work / "texts.json").write_text(json.dumps(texts))
    np.save(work / "ref.npy", embedder.embed(texts))


def run(work: Path, model: str, out: Path) -> dict:
    import numpy as np
    import torch

    from bench.embedding import speed
    from rag.embedding import SentenceTransformerEmbedder, pick_device, pick_dtype

    texts = json.loads((work / "texts.json").read_text())
    ref = np.load(work / "ref.npy")
    result = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "chunks": len(texts),
              "auto_device": pick_device("auto"), "auto_dtype": pick_dtype("auto", pick_device("auto"))}
    embedders = {d: SentenceTransformerEmbedder(model, device="cuda", dtype=d, batch_size=256)
                 for d in ("float32", "float16")}
    for embedder in embedders.values():
        embedder.embed(texts[:512])  # warm-up: kernels, allocator
    result.update(speed(embedders, texts))  # interleaved rounds, as on the CPU (embed returns host arrays: synced)
    for d, embedder in embedders.items():
        cos = (embedder.embed(texts) * ref).sum(axis=1)
        result[d].update(cosine_to_cpu_fp32_min=round(float(cos.min()), 5),
                         cosine_to_cpu_fp32_mean=round(float(cos.mean()), 6))
    result["speedup_fp16"] = round(result["float16"]["chunks_per_s"] / result["float32"]["chunks_per_s"], 2)
    out.write_text(json.dumps(result, indent=1) + "\n")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepare", action="store_true", help="write texts and CPU float32 vectors to --work")
    parser.add_argument("-c", "--collection", default="default")
    parser.add_argument("--chunks", type=int, default=2000)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--model", default="all-MiniLM-L6-v2", help="the embedding model (a folder on the GPU machine)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "embedding_gpu.json")
    args = parser.parse_args()
    if args.prepare:
        prepare(args.collection, args.work, args.chunks)
    else:
        print(json.dumps(run(args.work, args.model, args.out), indent=1))


if __name__ == "__main__":
    main()
