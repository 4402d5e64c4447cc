"""One evaluation run, end to end: build the arms from settings, answer, measure costs, score, report.

`run(config, settings)` is what `rag eval` and `rag eval run FOLDER` call. It wires rag/ parts,
eval/runner.py (answers and costs), eval/scoring.py and eval/report.py; it holds no metric logic.
"""

from __future__ import annotations

import random
import shutil
import time
from typing import Callable

from eval.config import LORA_ARMS, RAG_ARMS, EvalConfig
from eval.runner import (
    Arms,
    RunData,
    answer_all,
    beir_questions,
    index_build_seconds,
    rankings,
    read_qa,
    relevant_chunks,
    relevant_from_qrels,
    token_counter,
)
from rag.errors import ConfigError
from rag.generator import Generator
from rag.settings import Settings


def _generators(settings: Settings, adapter_path: str | None, adapter_name: str | None):
    from rag.components import make_generator

    base = make_generator(settings)
    tuned = None
    if adapter_name:
        tuned = make_generator(settings, adapter=adapter_name if settings.backend == "server" else adapter_path)
    return base, tuned


def select_questions(questions: list[dict], config: EvalConfig) -> list[dict]:
    """The first `limit` questions, or `sample` of them drawn with `seed` (in file order), or all."""
    if config.sample and config.sample < len(questions):
        keep = sorted(random.Random(config.seed).sample(range(len(questions)), config.sample))
        return [questions[i] for i in keep]
    return questions[: config.limit or None]


def run(config: EvalConfig, settings: Settings, progress: Callable = lambda items, **_: items,
        log: Callable[[str], None] = lambda line: None) -> dict:
    """Answer, score and report; returns the results dict also written to `<out>/results.json`."""
    from eval import report as reporting
    from rag.adapters import resolve_adapter
    from rag.components import make_chunker, make_embedder, open_collection
    from rag.models import resolve_model
    from rag.retriever import Retriever

    settings = settings.replace(**config.settings) if config.settings else settings
    qrels = None
    if config.beir:
        questions, qrels = beir_questions(config.beir)
    else:
        questions = read_qa(config.qa)
    questions = select_questions(questions, config)
    embedder = make_embedder(settings)
    needs_rag = any(arm in RAG_ARMS for arm in config.arms)
    collection = open_collection(settings, embedder) if needs_rag else None
    retriever = Retriever(collection, embedder) if collection else None
    adapter = resolve_adapter(config.adapter, settings.adapters_dir) if config.adapter else None
    lora = adapter if any(arm in LORA_ARMS for arm in config.arms) else None
    # the embedded SmolLM2's folder, or settings.model as given: also the tokenizer for a server's model
    model_path = resolve_model(settings.model, settings.cache_dir)
    log(f"{len(questions)} questions x {len(config.arms)} arms ({', '.join(config.arms)}), backend {settings.backend}")
    base, tuned = _generators(settings, str(lora.path) if lora else None, lora.name if lora else None)
    arms = Arms(retriever, base, tuned, settings, token_counter(model_path))

    generation = {"model": settings.model or "embedded", "backend": settings.backend, "k": settings.k,
                  "mode": settings.mode, "max_tokens": settings.max_tokens, "temperature": settings.temperature}
    keys = {}
    for arm in config.arms:
        extra = dict(generation, arm=arm)
        if arm in RAG_ARMS:
            extra.update(collection=collection.name, generation_id=collection.generation)
        if arm in LORA_ARMS:
            extra.update(adapter=lora.name, adapter_created=lora.card.get("created"), adapter_hash=lora.card.get("data_sha256"))
        keys[arm] = config.answer_key(extra)
    records = answer_all(config, arms, questions, keys, progress)

    data = RunData(questions, records, {}, {})
    if retriever is not None:
        data.rankings = rankings(retriever, questions, max(config.retrieval_k, settings.k), settings.mode)
        data.relevant = relevant_from_qrels(collection, qrels) if qrels is not None else relevant_chunks(collection, questions)
        log("timing the index build (re-ingesting the collection's files into a scratch collection)")
        data.costs.update(index_build_seconds(collection, embedder, make_chunker(settings, embedder),
                                              config.out / "scratch-index"))
    if lora is not None:
        data.costs["finetune_s"] = lora.card.get("train_seconds")
        data.costs["finetune_steps"] = lora.card.get("steps")
    if config.update_docs:
        log("knowledge update: ingest the new documents (RAG) and train an adapter on them (LoRA)")
        data.update = knowledge_update(config, settings, embedder, collection, model_path, base, progress)
    if config.judge_url:
        from eval.judge import judge_records

        log(f"LLM judge at {config.judge_url}")
        data.costs["judge"] = judge_records(config.judge_url, config.judge_model, records, {r["id"]: r for r in questions})
    return reporting.write_report(config, settings, data, embedder, model_path, adapter=lora)


def knowledge_update(config: EvalConfig, settings: Settings, embedder, collection, model_path: str,
                     base: Generator, progress: Callable) -> dict:
    """New documents with new facts: per arm, the seconds until it can answer them, and whether it does.

    RAG: ingest the documents into a copy of the collection. LoRA: build training data from the new
    documents alone and train a fresh adapter for `update_steps` steps. Base: no way to update."""
    from eval.metrics import fact_recall
    from ingest.pipeline import ingest
    from rag.components import make_chunker
    from rag.finetune import FinetuneConfig, train
    from rag.finetune_data import build_dataset
    from rag.generator import LocalGenerator
    from rag.retriever import Retriever
    from rag.store import Collection

    scratch = config.out / "scratch-update"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    chunker = make_chunker(settings, embedder)
    questions = read_qa(config.update_qa)
    result: dict = {"questions": len(questions), "arms": {}}

    updated = None
    rag_seconds = None
    if collection is not None:
        shutil.copytree(collection.folder, scratch / "collection", ignore=shutil.ignore_patterns("*.lock"))
        updated = Collection.open(scratch / "collection")
        start = time.perf_counter()
        report = ingest([config.update_docs], updated, embedder, chunker)
        rag_seconds = time.perf_counter() - start
        if report.failed:
            raise ConfigError(f"{config.update_docs}: update documents failed to ingest: {'; '.join(report.errors)}")

    start = time.perf_counter()
    only_new = Collection.open(scratch / "new-only", embedder.name, embedder.dim, create=True)
    ingest([config.update_docs], only_new, embedder, chunker)
    build_dataset(only_new, scratch / "data", mode="qa", heldout_fraction=0.0, seed=config.seed)
    tuned = train(FinetuneConfig(
        data=scratch / "data", name="update", base_model=model_path, adapters_dir=scratch / "adapters",
        max_steps=config.update_steps, batch_size=8, lr=1e-3, patience=0, check=0, seed=config.seed,
        device=settings.device, progress=False,
    ))
    lora_seconds = time.perf_counter() - start

    # The new adapter is not registered with a running server, so it is always asked in-process.
    new_lora = LocalGenerator(model_path, settings.device, adapter=str(tuned.path))
    arms = {"base": (base, None, None), "rag": (base, updated, rag_seconds),
            "lora": (new_lora, None, lora_seconds), "lora+rag": (new_lora, updated, None)}
    if rag_seconds is not None:
        arms["lora+rag"] = (new_lora, updated, lora_seconds + rag_seconds)
    from rag.components import make_assistant

    for arm in config.arms:
        generator, coll, seconds = arms[arm]
        if arm in RAG_ARMS and coll is None:
            continue
        retriever = Retriever(coll, embedder) if coll is not None else None
        assistant = make_assistant(settings, generator, retriever)
        recalls = []
        for row in progress(questions, desc=f"update: {arm}", unit="answer"):
            answer = assistant.ask(row["question"], "rag" if retriever else "base").answer
            recalls.append(fact_recall(answer, row.get("facts") or []))
        scored = [r for r in recalls if r == r]
        result["arms"][arm] = {
            "update_s": seconds, "fact_recall": sum(scored) / len(scored) if scored else None,
            "answered": sum(r == 1.0 for r in scored),
        }
    result["lora_train_steps"] = tuned.card["steps"]
    if updated is not None:
        updated.close()
    only_new.close()
    shutil.rmtree(scratch, ignore_errors=True)
    return result
