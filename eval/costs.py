"""One-off costs the arms pay: building the index, and taking in new knowledge.

`index_build_seconds` re-ingests the collection's own files into a scratch collection.
`knowledge_update` gives every arm new documents with new facts: RAG ingests them into a copy of
the collection, LoRA trains a fresh adapter on them alone, base has no way to update; then each
arm answers questions about them. Scratch collections are closed and their folders removed however
the measurement ends. It does not touch the collection under test or score the main run.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable
from contextlib import ExitStack, closing
from pathlib import Path

from eval.config import EvalConfig
from eval.results import KnowledgeUpdate, UpdateArm
from eval.runner import read_qa
from rag.errors import ConfigError
from rag.generator import Generator
from rag.modes import ANSWER_MODES
from rag.settings import Settings


def index_build_seconds(collection, embedder, chunker, scratch: Path) -> dict:
    """Seconds to ingest the collection's files into an empty collection, and what that made."""
    from ingest.pipeline import ingest
    from rag.store import Collection

    paths = [Path(p) for p in collection.file_hashes() if Path(p).is_file()]
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        with closing(Collection.open(scratch, embedder.name, embedder.dim, create=True)) as copy:
            start = time.perf_counter()
            report = ingest(paths, copy, embedder, chunker)
            seconds = time.perf_counter() - start
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {"index_build_s": seconds, "index_files": len(paths), "index_chunks": report.chunks_added}


def knowledge_update(config: EvalConfig, settings: Settings, embedder, collection, model_path: str,
                     base: Generator, progress: Callable) -> KnowledgeUpdate:
    """Per arm, the seconds until it can answer questions about `config.update_docs`, and whether it does."""
    from rag.components import make_chunker
    from rag.generator import LocalGenerator
    from rag.store import Collection

    questions = read_qa(config.update_qa)
    scratch = config.out / "scratch-update"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    chunker = make_chunker(settings, embedder)
    try:
        with ExitStack() as stack:  # closes the scratch collections' SQLite handles
            updated, rag_seconds = None, None
            if collection is not None:
                shutil.copytree(collection.folder, scratch / "collection", ignore=shutil.ignore_patterns("*.lock"))
                updated = stack.enter_context(closing(Collection.open(scratch / "collection")))
                rag_seconds = _ingest_seconds(config.update_docs, updated, embedder, chunker)
            start = time.perf_counter()
            only_new = stack.enter_context(closing(Collection.open(scratch / "new-only", embedder.name,
                                                                   embedder.dim, create=True)))
            _ingest_seconds(config.update_docs, only_new, embedder, chunker)
            tuned = _train(config, settings, only_new, model_path, scratch)
            lora_seconds = time.perf_counter() - start
            # The new adapter is not registered with a running server, so it is always asked in-process.
            new_lora = LocalGenerator(model_path, settings.device, adapter=str(tuned.path))
            result = KnowledgeUpdate(questions=len(questions), lora_train_steps=tuned.card["steps"], arms={})
            for arm in config.arms:
                mode = ANSWER_MODES[arm]
                if mode.retrieval and updated is None:
                    continue
                # The update's cost: ingesting the new documents, training on them, or both.
                parts = ([rag_seconds] if mode.retrieval else []) + ([lora_seconds] if mode.adapter else [])
                rows = progress(questions, desc=f"update: {arm}", unit="answer")
                result.arms[arm] = _ask(settings, new_lora if mode.adapter else base,
                                        updated if mode.retrieval else None, embedder, arm, rows,
                                        sum(parts) if parts else None)
            return result
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _ingest_seconds(docs: Path, collection, embedder, chunker) -> float:
    from ingest.pipeline import ingest

    start = time.perf_counter()
    report = ingest([docs], collection, embedder, chunker)
    if report.failed:
        raise ConfigError(f"{docs}: update documents failed to ingest: {'; '.join(report.errors)}")
    return time.perf_counter() - start


def _train(config: EvalConfig, settings: Settings, only_new, model_path: str, scratch: Path):
    """A fresh adapter trained on questions made from the new documents alone."""
    from rag.finetune import FinetuneConfig, train
    from rag.finetune_data import build_dataset

    build_dataset(only_new, scratch / "data", mode="qa", heldout_fraction=0.0, seed=config.seed)
    return train(FinetuneConfig(
        data=scratch / "data", name="update", base_model=model_path, adapters_dir=scratch / "adapters",
        max_steps=config.update_steps, batch_size=8, lr=1e-3, patience=0, check=0, seed=config.seed,
        device=settings.device, progress=False,
    ))


def _ask(settings: Settings, generator: Generator, collection, embedder, arm: str, questions,
         seconds: float | None) -> UpdateArm:
    """The arm's fact recall on the questions about the new documents."""
    from eval.metrics import fact_recall
    from rag.components import make_assistant, make_retriever

    retriever = make_retriever(settings, embedder, collection) if collection is not None else None
    assistant = make_assistant(settings, generator, retriever)
    recalls = [fact_recall(assistant.ask(row["question"], arm).answer, row.get("facts") or [])
               for row in questions]
    scored = [r for r in recalls if not math.isnan(r)]
    return UpdateArm(update_s=seconds, fact_recall=sum(scored) / len(scored) if scored else None,
                     answered=sum(r == 1.0 for r in scored))
