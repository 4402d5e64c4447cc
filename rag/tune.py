"""Tuning without labels: choose a collection's retrieval mode, fusion weights and abstain threshold.

Synthetic questions are drawn from the collection's own chunks by the generator of `rag
finetune-data` (offline cloze questions, or a teacher model), each labelled with the chunks that
hold its source sentence. Offline questions drop the template and the document name (real questions
name neither) and the answer span (the cloze blanks it). Asked as they are, they still flatter BM25:
they repeat a sentence of the chunk word for word, which no real user does. A real question says the
same thing in other words, which a dense retriever is trained to see through and BM25 is not. So
each retriever is shown what it would see of such a paraphrase (correction "hide-bm25"): the dense
retriever searches the intact collection; BM25 searches a scratch copy in which the question's own
sentence is cut out of every chunk that holds it. BM25 can still match the words the question shares
with the rest of its chunk (names, terms and identifiers that recur there, which a user keeps when
paraphrasing), but not the sentence's one-off wording. This treats dense retrieval as if it were
blind to paraphrase, which errs towards dense; bench/tune.py measures how far that goes on labelled
sets, next to "none" (both on the intact collection) and "hide" (both on the copy).

Dense, BM25 and hybrid rankings over a grid of fusion weights are scored on those questions
(chunk-level nDCG@10, hit@1, MRR@10). The best hybrid weights are recorded as `fusion_weights`
(used whenever hybrid runs); `default_mode` is the best single mode unless the best hybrid beats it
by HYBRID_MARGIN (the best of 13 weightings is optimistic, and hybrid runs both retrievers).

The abstain threshold is calibrated on the same answerable questions, asked of the scratch copy
(their sentence is not there verbatim, as a real question's is not): the score is the best cosine
among the first k hits of the chosen mode (what the gate in rag.answer compares), and the threshold
is the highest one that abstains on at most `false_abstention` of them. Its abstention on questions
the collection cannot answer (NEUTRAL_QUESTIONS, and/or questions drawn from another collection) is
reported, never fitted. It does not change the collection's chunks or index, only its metadata.
"""

from __future__ import annotations

import json
import math
import random
import re
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from rag.chunking import Chunk
from rag.embedding import Embedder
from rag.errors import ConfigError, RagError
from rag.finetune_data import Fact, offline_facts, sentences, teacher_facts
from rag.retriever import Hit, Retriever, fuse
from rag.store import Collection, StoredChunk

NEUTRAL_QUESTIONS = Path(__file__).parent / "data" / "neutral_questions.txt"
DEPTH = 10  # nDCG@10 and MRR@10
POOL = 4 * DEPTH  # candidates per retriever before fusion: what Retriever.search(k=10, mode="hybrid") fuses
# (dense, BM25) weights of hybrid fusion; only their ratio matters. Small BM25 weights matter most:
# with RRF_K = 60, a BM25 weight of 0.1 already outweighs the gap between dense ranks 1 and 10.
SHARES = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7)
WEIGHT_GRID = tuple((1.0, s) for s in SHARES) + ((1.0, 1.0),) + tuple((s, 1.0) for s in reversed(SHARES))
HYBRID_MARGIN = 0.01  # nDCG@10 by which the best hybrid must beat the best single mode to be the default
MIN_QUESTIONS = 10
MIN_WORDS_LEFT = 8  # a chunk must keep this many words once the sentence is hidden, or it is not asked about
VECTOR_BATCH = 4096  # vectors read per query when copying a collection (SQLite's variable limit)
# Where each retriever searches for a synthetic question: the intact collection, or the copy with the
# question's sentence hidden. (dense, BM25); see the module docstring.
CORRECTIONS = {"none": ("intact", "intact"), "hide": ("hidden", "hidden"), "hide-bm25": ("intact", "hidden")}


class TuneError(RagError):
    """A collection that cannot be tuned (too few questions can be drawn from it); says what to do."""


@dataclass
class Probe:
    """One synthetic question, the sentence hidden from the index, and the chunks that held it."""

    question: str
    hidden: str
    relevant: frozenset[str]  # chunk ids
    round: int = 0  # the n-th question about its chunk: each round hides its sentences in a copy of its own


@dataclass
class Candidate:
    mode: str  # dense | bm25 | hybrid
    weights: tuple[float, float] | None  # hybrid only: (dense, BM25)
    scores: dict[str, float] = field(default_factory=dict)  # ndcg@10, hit@1, mrr

    @property
    def name(self) -> str:
        return self.mode if self.weights is None else f"hybrid {self.weights[0]:g}:{self.weights[1]:g}"


@dataclass
class TuneReport:
    collection: str
    date: str
    generator: str
    correction: str
    questions: int
    candidates: list[Candidate]
    mode: str
    weights: tuple[float, float]
    threshold: float | None  # None: no gate (--no-gate)
    false_abstention_target: float
    false_abstention: float  # on the answerable synthetic questions, at the threshold
    abstention: dict[str, dict] = field(default_factory=dict)  # per unanswerable set: {"n", "abstained"}
    k: int = 3
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        out = asdict(self)
        out["candidates"] = [{"name": c.name, "mode": c.mode, "weights": c.weights,
                              **{m: round(v, 4) for m, v in c.scores.items()}} for c in self.candidates]
        out["seconds"] = round(self.seconds, 1)
        return out


# ---- questions ---------------------------------------------------------------------------------


def _flat(text: str) -> str:
    return " ".join(text.split())


def _words_pattern(sentence: str) -> re.Pattern:
    """The sentence in a chunk's raw text, whatever whitespace or line breaks lie between its words."""
    return re.compile(r"\s+".join(re.escape(word) for word in sentence.split()))


def draw_probes(collection: Collection, n: int, seed: int = 0, ask: Callable[[str], str] | None = None,
                warnings: list[str] | None = None) -> list[Probe]:
    """Up to `n` questions from the collection's chunks, at most one per chunk while chunks last."""
    chunks = collection.all_chunks()
    rng = random.Random(seed)
    warnings = [] if warnings is None else warnings
    if ask is not None:  # a teacher costs one call per chunk: ask about a sample of chunks only
        facts = teacher_facts(rng.sample(chunks, min(len(chunks), n)), 2, ask, warnings)
    else:
        facts = offline_facts(chunks, 0)
    flat_texts = [(c.id, _flat(c.text)) for c in chunks]
    candidates = []
    for fact in facts:
        hidden = _hidden_sentence(fact)
        question = _question(fact, ask is not None)
        source = _flat(fact.chunk.text)
        if not hidden or not question or hidden not in source:
            continue
        if len(source.split()) - len(hidden.split()) < MIN_WORDS_LEFT:
            continue
        candidates.append((fact.chunk.id, question, hidden))
    rng.shuffle(candidates)
    # one question per chunk first, then second questions about the same chunks, and so on
    asked: dict[str, int] = {}
    order = []
    for i, (cid, _, _) in enumerate(candidates):
        asked[cid] = asked.get(cid, 0) + 1
        order.append((asked[cid], i))
    chosen = sorted(order)[:n]
    return [Probe(candidates[i][1], candidates[i][2],
                  frozenset(cid for cid, text in flat_texts if candidates[i][2] in text), round=nth - 1)
            for nth, i in chosen]


def _hidden_sentence(fact: Fact) -> str:
    """The sentence a question was made from: the cloze's sentence, or the teacher's answer's."""
    if fact.span != fact.answer:  # offline: the answer is the whole sentence
        return _flat(fact.answer)
    answer = _flat(fact.answer).lower()
    return next((s for s in sentences(fact.chunk.text) if answer and answer in s.lower()), "")


def _question(fact: Fact, teacher: bool) -> str:
    if teacher:  # the teacher's last paraphrase: the phrasing furthest from the passage's words
        return fact.questions[-1].strip()
    return _flat(fact.answer.replace(fact.span, " ", 1))  # the cloze's sentence, its answer span dropped


def read_questions(path: Path) -> list[str]:
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


# ---- the scratch copy ----------------------------------------------------------------------------


def hidden_copy(collection: Collection, embedder: Embedder, probes: list[Probe], folder: Path) -> Collection:
    """A copy of `collection` in `folder` with every probe's sentence cut from the chunks holding it
    (those chunks re-embedded; the others keep their stored vectors)."""
    chunks = collection.all_chunks()
    cuts: dict[str, list[str]] = {}
    for probe in probes:
        for cid in probe.relevant:
            cuts.setdefault(cid, []).append(probe.hidden)
    texts = {}
    for chunk in chunks:
        if chunk.id in cuts:
            text = chunk.text
            for sentence in cuts[chunk.id]:
                text = _words_pattern(sentence).sub(" ", text, count=1)
            texts[chunk.id] = text
    # A chunk keeps its heading path, if the store records one; what is embedded is what ingest embeds.
    copied = {c.id: Chunk(c.id, c.source, c.page, c.start, c.end, texts.get(c.id, c.text), getattr(c, "heading", ""))
              for c in chunks}
    changed = [c for c in chunks if c.id in texts]
    new_vectors = dict(zip((c.id for c in changed), embedder.embed([copied[c.id].indexed for c in changed])))
    vectors: dict[int, np.ndarray] = {}
    vids = [c.vid for c in chunks]
    for start in range(0, len(vids), VECTOR_BATCH):
        batch = vids[start:start + VECTOR_BATCH]
        vectors.update(zip(batch, collection.vectors_by_vid(batch)))
    by_source: dict[str, list[StoredChunk]] = {}
    for chunk in chunks:
        by_source.setdefault(chunk.source, []).append(chunk)
    hashes = collection.file_hashes()
    copy = Collection.open(folder, collection.model, collection.dim, create=True)
    with copy.writer(index_type="flat") as writer:
        for source, items in by_source.items():
            rows = [copied[c.id] for c in items]
            stack = np.stack([new_vectors.get(c.id, vectors[c.vid]) for c in items])  # (n, dim) float32
            writer.replace_file(source, hashes.get(source, ""), 0, rows, stack)
        writer.commit()
    return copy


# ---- scoring ---------------------------------------------------------------------------------


def candidates() -> list[Candidate]:
    return [Candidate("dense", None), Candidate("bm25", None)] + [Candidate("hybrid", w) for w in WEIGHT_GRID]


def rank(candidate: Candidate, dense: list[Hit], bm25: list[Hit], depth: int = DEPTH) -> list[str]:
    """The chunk ids the candidate puts first, from the two retrievers' rankings (each POOL deep)."""
    if candidate.mode == "dense":
        return [h.chunk_id for h in dense[:depth]]
    if candidate.mode == "bm25":
        return [h.chunk_id for h in bm25[:depth]]
    pairs = [[(h.chunk_id, h.score) for h in ranking] for ranking in (dense, bm25)]
    return [cid for cid, _ in fuse(pairs, candidate.weights)[:depth]]


def score(ranked: list[str], relevant: Iterable[str]) -> dict[str, float]:
    from eval.metrics import hit_at_k, ndcg_at_k, reciprocal_rank

    relevant = set(relevant)
    return {"ndcg@10": ndcg_at_k(ranked, {cid: 1 for cid in relevant}, DEPTH),
            "hit@1": hit_at_k(ranked, relevant, 1), "mrr": reciprocal_rank(ranked[:DEPTH], relevant)}


def choose(scored: list[Candidate]) -> tuple[str, tuple[float, float]]:
    """(default mode, hybrid weights): the best hybrid weights, and the best single mode unless the
    best hybrid beats it by HYBRID_MARGIN nDCG@10. Ties go to the earlier candidate."""
    def key(c: Candidate) -> tuple[float, float, float]:
        return c.scores["ndcg@10"], c.scores["hit@1"], c.scores["mrr"]

    single = max((c for c in scored if c.mode != "hybrid"), key=key)
    hybrid = max((c for c in scored if c.mode == "hybrid"), key=key)
    mode = "hybrid" if hybrid.scores["ndcg@10"] > single.scores["ndcg@10"] + HYBRID_MARGIN else single.mode
    return mode, hybrid.weights


def first_hits(candidate: Candidate, dense: list[Hit], bm25: list[Hit], k: int) -> list[Hit]:
    """The hits Retriever.search(k=k) returns in the candidate's mode, from POOL-deep rankings."""
    pool = min(POOL, max(k * 4, 20))  # the depth search fuses at for k
    dense, bm25 = dense[:pool], bm25[:pool]
    by_id = {h.chunk_id: h for h in dense + bm25}
    return [by_id[cid] for cid in rank(candidate, dense, bm25, depth=k)]


def best_cosine(hits: list[Hit]) -> float:
    """What the abstain gate compares with its threshold: the best cosine among the hits."""
    return max((h.dense for h in hits), default=-1.0)


def calibrate(answerable: list[float], false_abstention: float) -> float:
    """The highest threshold t with share(score < t) <= false_abstention over the answerable scores."""
    ordered = sorted(answerable)
    return ordered[min(len(ordered) - 1, math.floor(false_abstention * len(ordered)))]


# ---- the whole run -------------------------------------------------------------------------------


def measure(collection: Collection, embedder: Embedder, probes: list[Probe], correction: str = "hide-bm25",
            progress: Callable[..., Iterable] | None = None) -> tuple[list[Candidate], list[tuple[list[Hit], list[Hit]]]]:
    """Every candidate scored on the probes, searched as `correction` says; and per probe the (dense,
    BM25) rankings in its hidden copy, which the threshold is calibrated on."""
    if correction not in CORRECTIONS:
        raise ConfigError(f"correction must be one of {', '.join(CORRECTIONS)}; got {correction!r}")
    progress = progress or (lambda items, **kwargs: items)
    scored = candidates()
    dense_in, bm25_in = CORRECTIONS[correction]
    # Without the section score, which one-sentence questions cannot judge: they ask about one chunk,
    # while a real question asks about the topic a section states (rag.retriever); it is applied on
    # top of whichever mode is chosen.
    intact = Retriever(collection, embedder, weights=(1.0, 1.0), section_weight=0.0)
    in_copy: list[tuple[list[Hit], list[Hit]]] = []
    values: dict[str, list[dict[str, float]]] = {c.name: [] for c in scored}
    with tempfile.TemporaryDirectory(prefix="rag-tune-") as scratch:
        copies = [hidden_copy(collection, embedder, [p for p in probes if p.round == n], Path(scratch) / str(n))
                  for n in range(max(p.round for p in probes) + 1)]
        try:
            hidden = [Retriever(copy, embedder, weights=(1.0, 1.0), section_weight=0.0) for copy in copies]
            for probe in progress(probes, desc="tune", unit="question"):
                where = {"intact": intact, "hidden": hidden[probe.round]}
                needed = {(dense_in, "dense"), (bm25_in, "bm25"), ("hidden", "dense"), ("hidden", "bm25")}
                found = {(place, mode): where[place].search(probe.question, k=POOL, mode=mode)
                         for place, mode in needed}
                dense, bm25 = found[dense_in, "dense"], found[bm25_in, "bm25"]
                in_copy.append((found["hidden", "dense"], found["hidden", "bm25"]))
                for candidate in scored:
                    values[candidate.name].append(score(rank(candidate, dense, bm25), probe.relevant))
        finally:
            for copy in copies:
                copy.close()
    for candidate in scored:
        candidate.scores = {metric: float(np.mean([v[metric] for v in values[candidate.name]]))
                            for metric in values[candidate.name][0]}
    return scored, in_copy


def abstention(collection: Collection, embedder: Embedder, mode: str, weights: tuple[float, float],
               threshold: float, k: int, questions: list[str]) -> float:
    """The share of `questions` the gate refuses at `threshold`, searched as the tuned collection will be."""
    retriever = Retriever(collection, embedder, weights=weights)
    return float(np.mean([best_cosine(retriever.search(q, k=k, mode=mode)) < threshold for q in questions]))


def tune(collection: Collection, embedder: Embedder, *, questions: int = 200, seed: int = 0,
         ask: Callable[[str], str] | None = None, teacher_name: str = "", negatives: Collection | None = None,
         neutral: Path | None = NEUTRAL_QUESTIONS, false_abstention: float = 0.05, gate: bool = True, k: int = 3,
         correction: str = "hide-bm25", record: bool = True,
         progress: Callable[..., Iterable] | None = None) -> TuneReport:
    """Score every candidate on synthetic questions, calibrate the abstain threshold (unless not
    `gate`), record both in the collection's metadata (unless not `record`), and return what was
    measured. `negatives`: another collection, whose synthetic questions count as unanswerable."""
    if questions < MIN_QUESTIONS:
        raise ConfigError(f"questions must be at least {MIN_QUESTIONS}, got {questions!r}")
    if not 0 <= false_abstention < 1:
        raise ConfigError(f"false_abstention must be in [0, 1), got {false_abstention!r}")
    if k <= 0:
        raise ConfigError(f"k must be positive, got {k!r}")
    start = time.perf_counter()
    warnings: list[str] = []
    probes = draw_probes(collection, questions, seed, ask, warnings)
    if len(probes) < MIN_QUESTIONS:
        raise TuneError(
            f"only {len(probes)} synthetic questions could be drawn from collection '{collection.name}' (at "
            f"least {MIN_QUESTIONS} are needed): it holds too few sentences with a date, number or name; add "
            "documents, or give a teacher model (--teacher-url)"
        )
    scored, in_copy = measure(collection, embedder, probes, correction, progress)
    mode, weights = choose(scored)
    chosen = next(c for c in scored if c.mode == mode and (mode != "hybrid" or c.weights == weights))
    cosines = [best_cosine(first_hits(chosen, dense, bm25, k)) for dense, bm25 in in_copy]
    threshold = calibrate(cosines, false_abstention) if gate else None
    report = TuneReport(
        collection.name, time.strftime("%Y-%m-%dT%H:%M:%S"), f"teacher:{teacher_name}" if ask else "offline",
        correction, len(probes), scored, mode, weights, threshold, false_abstention,
        float(np.mean([c < threshold for c in cosines])) if threshold is not None else 0.0, k=k, warnings=warnings,
    )
    unanswerable = {}
    if neutral is not None:
        unanswerable["neutral"] = read_questions(neutral)
    if negatives is not None:
        unanswerable[f"collection:{negatives.name}"] = [p.question for p in draw_probes(negatives, questions, seed)]
    for name, asked in unanswerable.items():
        if threshold is not None and asked:
            report.abstention[name] = {"n": len(asked), "abstained": abstention(collection, embedder, mode, weights,
                                                                                threshold, k, asked)}
    report.seconds = time.perf_counter() - start
    if record:
        record_choice(collection, report)
    return report


def record_choice(collection: Collection, report: TuneReport) -> None:
    """Write the choice into the collection's metadata, in one transaction. No gate records an empty
    threshold, which clears one an earlier run recorded (the gate reads it as none)."""
    collection.set_meta({
        "fusion_weights": json.dumps(list(report.weights)),
        "default_mode": report.mode,
        "abstain_threshold": "" if report.threshold is None else f"{report.threshold:.4f}",
        "tune": json.dumps(report.as_dict()),
    })
