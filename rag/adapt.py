"""Adapting the embedding model to one collection, without labels: `rag tune`'s first step.

The inverse cloze task (Lee, Chang and Toutanova, 2019): a sentence drawn from a chunk is the
question, the chunk with that sentence cut out (left in one time in ten) is its answer, and every
other chunk of the batch is a wrong answer (sentence-transformers' MultipleNegativesRankingLoss).
One epoch over up to `pairs` such pairs teaches the model the collection's vocabulary and which
passages go with which statements; on the Python FAQ it moved dense nDCG@10 from 0.716 to about
0.74 (docs/BENCHMARKS.md). A tenth of the pairs is held out, and the adapted model is kept only when
it ranks their chunks better than the model it started from.

The adapted copy is saved in the collection's folder (`embedder-<digest>`, with a card naming it),
and the collection is re-embedded with it in one new generation that also records its name: queries,
new files and `--reembed` then use it (rag.components.embedding_model). Adapting again starts from
the base model once more; `rag tune --base-embedder` re-embeds with the base model and drops the copy.

Plain `rag tune` adapts too, once: the collection records what its last adaptation came to
(`embedder_adaptation` in its metadata), and a plain run does not train again over a copy in use,
after `--base-embedder` chose the base model, or after a refusal, until the collection has grown by
half (`settled`). `--adapt-embedder` always adapts (again).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from rag.chunking import indexed_text
from rag.embedding import ADAPTED_CARD as CARD
from rag.errors import RagError
from rag.finetune_data import sentences
from rag.settings import Settings
from rag.store import ADAPTED_MARK as MARK
from rag.store import ADAPTED_PREFIX as FOLDER_PREFIX
from rag.store import Collection, StoredChunk, adapted_folder

KEEP_SENTENCE = 0.1  # share of pairs whose answer keeps the question's sentence (as in the ICT paper)
HELD_OUT = 0.1
MIN_PAIRS = 200  # fewer sentences than this: too little text to adapt to
OUTCOME = "embedder_adaptation"  # collection metadata: what its last adaptation came to (JSON)
RETRY_GROWTH = 1.5  # after a refusal, plain `rag tune` adapts again once the collection has this many times the chunks
DISTRACTORS = 2000  # other chunks the held-out questions are ranked among
LEARNING_RATE = 2e-5
BATCH = 32
WARMUP = 0.1


class AdaptError(RagError):
    """The collection cannot be adapted to (too little text), or the adapted model did not pay."""

    def __init__(self, message: str, outcome: str):
        super().__init__(message)
        self.outcome = outcome  # "too little text" | "not kept", as recorded in the collection


@dataclass
class AdaptReport:
    collection: str
    base_model: str
    model: str = ""  # the adapted model's name, when kept
    kept: bool = False
    pairs: int = 0
    held_out: int = 0
    steps: int = 0
    train_s: float = 0.0
    reembed_s: float = 0.0
    held_out_mrr: dict[str, float] = field(default_factory=dict)  # {"base": .., "adapted": ..}
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


def adapted_name(base: str, digest: str) -> str:
    return f"{base}{MARK}{digest}"


def read_card(folder: Path) -> dict | None:
    try:
        return json.loads((Path(folder) / CARD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


class Pair(NamedTuple):
    question: str  # a sentence of the chunk
    answer: str  # the chunk's indexed text without that sentence (with it, one time in ten)
    chunk: str  # the chunk's id


def ict_pairs(chunks: list[StoredChunk], n: int, seed: int = 0, keep: float = KEEP_SENTENCE) -> list[Pair]:
    """Up to `n` (sentence, chunk without it) pairs, at most one per chunk while chunks last, then
    second sentences of the same chunks. Chunks of one sentence are skipped: without it nothing is left."""
    rng = random.Random(seed)
    order = list(range(len(chunks)))
    rng.shuffle(order)
    found = {j: sentences(chunks[j].text) for j in order}
    left = {j: list(found[j]) for j in order if len(found[j]) >= 2}
    pairs: list[tuple[str, str]] = []
    while left and len(pairs) < n:
        for j in [j for j in order if j in left]:
            sentence = left[j].pop(rng.randrange(len(left[j])))
            if not left[j]:
                del left[j]
            chunk = chunks[j]
            text = chunk.text if rng.random() < keep else " ".join(chunk.text.replace(sentence, " ", 1).split())
            pairs.append(Pair(sentence, indexed_text(chunk.heading, text), chunk.id))
            if len(pairs) >= n:
                break
    return pairs


def held_out_mrr(model, pairs: list[Pair], distractors: list[str], batch: int = 64) -> float:
    """MRR@10 of each held-out sentence's own chunk among all held-out chunks and the distractors."""
    questions = model.encode([p.question for p in pairs], batch_size=batch, normalize_embeddings=True)
    passages = model.encode([p.answer for p in pairs] + distractors, batch_size=batch, normalize_embeddings=True)
    scores = np.asarray(questions, np.float32) @ np.asarray(passages, np.float32).T
    own = scores[np.arange(len(pairs)), np.arange(len(pairs))]
    ranks = (scores > own[:, None]).sum(axis=1) + 1
    return float(np.mean(np.where(ranks <= 10, 1.0 / ranks, 0.0)))


def mixed_precision(device: str, dtype: str):
    """bfloat16 autocast where the embedder runs in a half precision (the device computes it natively),
    else a context that changes nothing; the weights stay float32 either way."""
    import torch

    return torch.autocast("cuda" if device.startswith("cuda") else "cpu", dtype=torch.bfloat16,
                          enabled=dtype in ("bfloat16", "float16"))


def train(model, pairs: list[Pair], *, device: str, dtype: str, seed: int = 0,
          learning_rate: float = LEARNING_RATE, batch: int = BATCH,
          progress: Callable[[int, int], None] = lambda step, steps: None) -> int:
    """One epoch of MultipleNegativesRankingLoss over `pairs`, in place; returns the steps taken.
    Mixed precision where the device computes it natively (`dtype`: the embedder's precision)."""
    import torch
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from sentence_transformers.util import batch_to_device
    from transformers import get_linear_schedule_with_warmup

    torch.manual_seed(seed)
    order = list(pairs)
    random.Random(seed).shuffle(order)
    batches = [order[at:at + batch] for at in range(0, len(order) - batch + 1, batch)]
    loss_fn = MultipleNegativesRankingLoss(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    schedule = get_linear_schedule_with_warmup(optimizer, max(1, int(WARMUP * len(batches))), len(batches))
    model.train()
    try:
        for step, part in enumerate(batches, 1):
            features = [model.preprocess([p.question for p in part]), model.preprocess([p.answer for p in part])]
            features = [batch_to_device(f, model.device) for f in features]
            with mixed_precision(device, dtype):
                loss = loss_fn(features, None)
            loss.backward()
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            progress(step, len(batches))
    finally:
        model.eval()
    return len(batches)


def adapt_collection(settings: Settings, *, pairs: int = 6000, seed: int = 0, force: bool = True,
                     progress: Callable[[int, int], None] = lambda step, steps: None,
                     note: Callable[[str], None] = lambda line: None) -> dict:
    """Adapt the settings' embedding model to the settings' collection and re-embed it with the copy
    (`rag tune --adapt-embedder`); the AdaptReport as a dict, with the chunks re-embedded. Not `force`
    (plain `rag tune`): a collection `settled` gives a reason for is left as it is, and the dict
    says why under "skipped". What it came to is recorded in the collection either way; a refusal
    raises AdaptError after recording it. `note` is told each step that shows no `progress`."""
    from ingest.pipeline import reembed
    from rag.components import make_embedder, open_collection
    from rag.embedding import model_name, pick_device, resolve_model_path

    current = make_embedder(settings)
    collection = open_collection(settings, current)
    done: dict = {}

    def with_adapted(save: Callable[[], Path]) -> float:
        note(f"re-embedding the collection's {collection.count()[1]} chunks with the adapted copy")
        # minutes of training are not thrown away because an ingest holds the lock: queue behind it
        done.update(reembed(collection, lambda: make_embedder(settings, model=str(save())), settings,
                            wait=math.inf))
        return done["seconds"]

    try:
        reason = None if force else settled(collection)
        if reason:
            return {"model": collection.model, "chunks": 0, "skipped": reason}
        chunks = collection.count()[1]
        try:
            report = adapt(collection, resolve_model_path(settings.embedding_model),
                           model_name(settings.embedding_model), device=pick_device(settings.device),
                           dtype=current.dtype, reembed=with_adapted, pairs=pairs, seed=seed, progress=progress,
                           note=note)
        except AdaptError as exc:
            record_outcome(collection, exc.outcome, chunks, str(exc))
            raise
        record_outcome(collection, "kept", chunks, report.model)
    finally:
        collection.close()
    return report.as_dict() | {"chunks": done.get("chunks", 0)}


def settled(collection: Collection) -> str | None:
    """Why plain `rag tune` leaves this collection's embedding model as it is, or None when it adapts it:
    it already uses an adapted copy, the base model was chosen, or its last adaptation was refused and
    it has not grown by RETRY_GROWTH since."""
    if MARK in collection.model:
        return f"it already uses the adapted copy {collection.model} (--adapt-embedder adapts again)"
    try:
        last = json.loads(collection.get_meta(OUTCOME) or "{}")
    except ValueError:
        last = {}
    if last.get("outcome") == "base chosen":
        return "the base model was chosen with --base-embedder (--adapt-embedder adapts)"
    if last.get("outcome") in ("too little text", "not kept"):
        chunks = collection.count()[1]
        if chunks < RETRY_GROWTH * last.get("chunks", 0):
            return (f"its last adaptation was refused ({last.get('detail', '')}); plain rag tune tries again once it "
                    f"holds {math.ceil(RETRY_GROWTH * last['chunks'])} chunks (now {chunks}), --adapt-embedder now")
    return None


def record_outcome(collection: Collection, outcome: str, chunks: int, detail: str = "") -> None:
    collection.set_meta({OUTCOME: json.dumps({"outcome": outcome, "chunks": chunks, "detail": detail,
                                              "date": time.strftime("%Y-%m-%dT%H:%M:%S")})})


def restore_base(settings: Settings) -> dict:
    """Re-embed an adapted collection with the base model again and drop its adapted copy (`rag tune
    --base-embedder`); a collection that is not adapted is left as it is. Either way plain `rag tune`
    no longer adapts it."""
    from ingest.pipeline import reembed
    from rag.components import make_embedder, open_collection
    from rag.embedding import model_name

    # opened without the adapted copy, whose folder may be the very thing that is missing
    collection = open_collection(settings)
    try:
        record_outcome(collection, "base chosen", collection.count()[1])
        if MARK not in collection.model:
            return {"model": collection.model, "chunks": 0}
        done = reembed(collection, make_embedder(settings, model=settings.embedding_model), settings, wait=math.inf)
    finally:
        collection.close()
    drop_unused(collection.folder, keep=None)
    return {"model": model_name(settings.embedding_model), "chunks": done["chunks"], "reembed_s": done["seconds"]}


def adapt(collection: Collection, base_path: str, base_name: str, *, device: str, dtype: str,
          reembed: Callable[[Callable[[], Path]], float], pairs: int = 6000, seed: int = 0,
          progress: Callable[[int, int], None] = lambda step, steps: None,
          note: Callable[[str], None] = lambda line: None) -> AdaptReport:
    """Train an adapted copy of the model at `base_path` on the collection's own chunks, check it on
    held-out pairs, and call `reembed(save)`: holding the collection's write lock (whose orphan sweep
    would take a folder the collection does not record yet), it calls `save()`, which writes the copy
    into the collection's folder and returns that folder, re-embeds the collection with it, records
    its name, and returns the seconds taken. Raises AdaptError, with nothing changed, when the
    collection is too small or the copy ranks the held-out pairs no better. `progress` follows the
    training steps; `note` is told what runs before and after them."""
    import torch
    from sentence_transformers import SentenceTransformer

    start = time.perf_counter()
    report = AdaptReport(collection.name, base_name)
    chunks = collection.all_chunks()
    drawn = ict_pairs(chunks, pairs, seed)
    if len(drawn) < MIN_PAIRS:
        raise AdaptError(
            f"collection '{collection.name}' has only {len(drawn)} sentences to adapt the embedding model to "
            f"(at least {MIN_PAIRS} are needed): add documents first", "too little text"
        )
    cut = max(1, int(HELD_OUT * len(drawn)))
    held, used = drawn[:cut], drawn[cut:]
    rng = random.Random(seed + 1)
    # a held-out chunk is no distractor to its own sentence: whole, it holds that sentence word for word
    held_chunks = {p.chunk for p in held}
    others = [c for c in chunks if c.id not in held_chunks]
    distractors = [indexed_text(c.heading, c.text) for c in rng.sample(others, min(len(others), DISTRACTORS))]
    report.pairs, report.held_out = len(used), len(held)

    # trained in float32 whatever the embedder computes in: AdamW's small steps vanish in bfloat16 weights
    note(f"adapting the embedding model to {len(used)} sentence/passage pairs of the collection; first, how well "
         f"{base_name} finds the passages of {len(held)} held-out sentences among {len(distractors)} others")
    model = SentenceTransformer(base_path, device=device, model_kwargs={"dtype": torch.float32})
    with mixed_precision(device, dtype), torch.inference_mode():
        report.held_out_mrr["base"] = held_out_mrr(model, held, distractors)
    t = time.perf_counter()
    report.steps = train(model, used, device=device, dtype=dtype, seed=seed, progress=progress)
    report.train_s = time.perf_counter() - t
    note("checking the adapted copy on the same held-out sentences")
    with mixed_precision(device, dtype), torch.inference_mode():
        report.held_out_mrr["adapted"] = held_out_mrr(model, held, distractors)
    if report.held_out_mrr["adapted"] <= report.held_out_mrr["base"]:
        raise AdaptError(
            f"the adapted embedding model ranked the held-out sentences' chunks no better than {base_name} (MRR@10 "
            f"{report.held_out_mrr['adapted']:.3f} against {report.held_out_mrr['base']:.3f}); the collection keeps "
            f"{base_name}", "not kept"
        )
    digest = hashlib.sha256(json.dumps([base_name, seed, len(used), collection.generation, time.time()])
                            .encode()).hexdigest()[:12]
    report.model = adapted_name(base_name, digest)
    folder = adapted_folder(collection.folder, report.model)

    def save() -> Path:
        staging = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        model.save(str(staging))
        (staging / CARD).write_text(json.dumps({
            "name": report.model, "base_model": base_name,
            "method": "inverse cloze task, MultipleNegativesRankingLoss", "pairs": len(used), "steps": report.steps,
            "learning_rate": LEARNING_RATE, "batch": BATCH, "seed": seed, "held_out_mrr": report.held_out_mrr,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }, indent=2) + "\n", encoding="utf-8")
        staging.rename(folder)
        return folder

    try:
        report.reembed_s = reembed(save)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    report.kept = True
    drop_unused(collection.folder, keep=folder)
    report.seconds = time.perf_counter() - start
    return report


def drop_unused(collection_folder: Path, keep: Path | None) -> None:
    """Remove adapted models the collection no longer records (an earlier adaptation, a staging copy)."""
    for path in Path(collection_folder).glob(f"{FOLDER_PREFIX}*"):
        if path.is_dir() and path != keep:
            shutil.rmtree(path, ignore_errors=True)
