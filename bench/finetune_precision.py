"""LoRA training of the embedded SmolLM2 on the CPU: fp32 against bf16 mixed precision (what
`precision = "auto"` picks on CPUs with AVX512-BF16 or AMX), same data, same steps, interleaved rounds.

The data is `rag finetune-data` on the sample corpus (offline cloze questions, qa format) in a scratch
collection. Each run trains from the same seed for --steps optimizer steps of --batch-size examples and
reports seconds per step, the mean training loss and the held-out loss at the end.

    python bench/finetune_precision.py [--steps 12] [--batch-size 8] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "finetune_precision.json"))
    args = parser.parse_args()

    from bench.corpus import scratch_collection
    from bench.machine import describe
    from rag.components import make_embedder
    from rag.embedding import cpu_has_bf16
    from rag.finetune import FinetuneConfig, train
    from rag.finetune_data import build_dataset
    from rag.models import resolve_model
    from rag.settings import load_settings

    settings = load_settings(environ=os.environ)
    collection = scratch_collection("sample", [str(ROOT / "data" / "sample")], settings, make_embedder(settings))
    work = Path(tempfile.mkdtemp(prefix="ft-precision-"))
    build_dataset(collection, work / "data", mode="qa", paraphrases=4, exclude_questions=[
        json.loads(line)["question"] for line in (ROOT / "data/sample/qa.jsonl").read_text().splitlines() if line.strip()])
    base = resolve_model(settings.model, settings.cache_dir)
    runs: dict[str, list[dict]] = {"fp32": [], "bf16": []}
    for round_ in range(args.rounds):
        for precision in runs:
            config = FinetuneConfig(data=work / "data", name=f"p-{precision}-{round_}", base_model=base,
                                    adapters_dir=work / "adapters", max_steps=args.steps, batch_size=args.batch_size,
                                    lr=1e-3, eval_steps=10_000, patience=0, check=0, device="cpu",
                                    precision=precision, progress=False)
            card = train(config).card
            runs[precision].append({k: card[k] for k in ("precision", "steps", "train_seconds", "seconds_per_step",
                                                          "train_loss_mean", "final_train_loss", "final_eval_loss")})
            print(json.dumps(runs[precision][-1]), file=sys.stderr)
    summary = {p: {"seconds_per_step_median": round(statistics.median(r["seconds_per_step"] for r in rs), 3),
                   "train_loss_mean": round(statistics.mean(r["train_loss_mean"] for r in rs), 4),
                   "final_eval_loss": round(statistics.mean(r["final_eval_loss"] for r in rs), 4)} for p, rs in runs.items()}
    summary["speedup_bf16"] = round(summary["fp32"]["seconds_per_step_median"] /
                                    summary["bf16"]["seconds_per_step_median"], 2)
    result = {"steps": args.steps, "batch_size": args.batch_size, "rounds": args.rounds, "cpu_has_bf16": cpu_has_bf16(),
              "summary": summary, "runs": runs, "machine": describe()}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
