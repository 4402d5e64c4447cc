"""One evaluation run, end to end: build the arms from settings, answer, measure costs, score, report.

`run(config, settings)` is what `rag eval` and `rag eval run FOLDER` call. It wires rag/ parts,
eval/runner.py (answers), eval/costs.py (index build, knowledge update), eval/judge.py and
eval/report.py; it holds no metric or report logic.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from contextlib import ExitStack, closing

from eval.answers import generator_identity
from eval.config import LORA_ARMS, RAG_ARMS, EvalConfig
from eval.costs import index_build_seconds, knowledge_update
from eval.results import Results
from eval.runner import (
    Arms,
    Model,
    RunData,
    answer_all,
    beir_questions,
    rankings,
    read_qa,
    relevant_chunks,
    relevant_from_qrels,
    token_counter,
)
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
        log: Callable[[str], None] = lambda line: None) -> Results:
    """Answer, score and report; returns the results also written to `<out>/results.json`."""
    from eval.report import write_report
    from rag.adapters import resolve_adapter
    from rag.components import make_chunker, make_embedder, make_retriever, open_collection
    from rag.models import resolve_model

    settings = settings.replace(**config.settings) if config.settings else settings
    qrels = None
    if config.beir:
        questions, qrels = beir_questions(config.beir)
    else:
        questions = read_qa(config.qa)
    questions = select_questions(questions, config)
    embedder = make_embedder(settings)
    with ExitStack() as stack:  # closes the collection's SQLite handle however the run ends
        collection = None
        if any(arm in RAG_ARMS for arm in config.arms):
            collection = stack.enter_context(closing(open_collection(settings, embedder)))
        adapter = resolve_adapter(config.adapter, settings.adapters_dir) if config.adapter else None
        lora = adapter if any(arm in LORA_ARMS for arm in config.arms) else None
        # the embedded SmolLM2's folder, or settings.model as given: also the tokenizer for a server's model
        model_path = resolve_model(settings.model, settings.cache_dir)
        log(f"{len(questions)} questions x {len(config.arms)} arms ({', '.join(config.arms)}), backend {settings.backend}")
        base, tuned = _generators(settings, str(lora.path) if lora else None, lora.name if lora else None)
        # the retriever of every RAG arm, behind the settings' reranker (an LLM reranker asks the base model)
        retriever = make_retriever(settings, embedder, collection, generator=base) if collection else None
        identity = {"backend": settings.backend, "model": settings.model, "model_path": model_path,
                    "embedding_model": embedder.name}  # a collection's adapted copy, where it has one
        arms = Arms(retriever, Model(base, generator_identity(**identity)),
                    Model(tuned, generator_identity(**identity, adapter=lora)) if tuned else None,
                    settings, token_counter(model_path))
        data = RunData(questions, answer_all(config, arms, questions, progress))
        if retriever is not None:
            data.rankings = rankings(retriever, questions, max(config.retrieval_k, settings.k), settings.mode)
            data.relevant = (relevant_from_qrels(collection, qrels) if qrels is not None
                             else relevant_chunks(collection, questions))
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
            judged = judge_records(config.judge_url, config.judge_model, data.records)
            data.judged = judged.scores
            data.costs["judge"] = judged.summary()
        return write_report(config, settings, data, embedder, model_path, adapter=lora)
