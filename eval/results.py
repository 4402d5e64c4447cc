"""Typed eval results: what one run measured, and the shape it is kept in as results.json.

`Results` holds, per arm, each metric's mean with its bootstrap interval (`Interval`) and the arm's
costs (`Cost`); paired arm differences (`Difference`); fact-recall and per-source splits; retrieval
scores; the knowledge update; every answer with its scores. In memory a mean that does not apply is
NaN and a cost that does not apply to an arm is None. `to_json` writes NaN as null and rounds floats
to 4 places; `from_json` reads that shape back, including older results.json files (they lack
`headline`: fact recall then); `load_results` is the one way to read a report folder back. It does
not compute results (eval/aggregate.py), render them (eval/render.py, eval/plots.py) or write the
report (eval/report.py).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rag.errors import ConfigError

RESULTS_FILE = "results.json"
NAN = math.nan


def _float(value: float | None) -> float:
    return NAN if value is None else float(value)


def _maybe(value: float | None) -> float | None:
    return None if value is None else float(value)


def is_missing(value: float | None) -> bool:
    """None or NaN: the value does not apply or was not measured."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def clean(value: Any) -> Any:
    """JSON cannot hold NaN: None instead, recursively; floats rounded to 4 places."""
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 4)
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value


@dataclass(frozen=True)
class Interval:
    """A mean over the questions that scored (`n` of them) and its 95 % bootstrap interval; NaN when none did."""

    mean: float
    low: float
    high: float
    n: int

    def to_json(self) -> dict:
        return {"mean": self.mean, "low": self.low, "high": self.high, "n": self.n}

    @classmethod
    def from_json(cls, data: dict | None) -> Interval:
        data = data or {}
        return cls(_float(data.get("mean")), _float(data.get("low")), _float(data.get("high")), int(data.get("n") or 0))


EMPTY = Interval(NAN, NAN, NAN, 0)


def _intervals(data: dict | None) -> dict[str, Interval]:
    return {name: Interval.from_json(value) for name, value in (data or {}).items()}


def _intervals_json(intervals: dict[str, Interval]) -> dict:
    return {name: value.to_json() for name, value in intervals.items()}


@dataclass
class UpdateArm:
    """One arm after the knowledge update: seconds until it could answer the new questions (None: it
    cannot be updated, as the base model), its fact recall on them, and how many it fully answered."""

    update_s: float | None
    fact_recall: float | None
    answered: int | None = None  # not kept in an arm's cost columns, so None when read from those alone

    def to_json(self) -> dict:
        return {"update_s": self.update_s, "fact_recall": self.fact_recall, "answered": self.answered}

    @classmethod
    def from_json(cls, data: dict) -> UpdateArm:
        return cls(_maybe(data.get("update_s")), _maybe(data.get("fact_recall")), data.get("answered"))


@dataclass
class KnowledgeUpdate:
    """New documents with new facts: RAG ingests them, LoRA trains a fresh adapter, base cannot update."""

    questions: int
    lora_train_steps: int
    arms: dict[str, UpdateArm]

    def to_json(self) -> dict:
        return {"questions": self.questions, "arms": {arm: u.to_json() for arm, u in self.arms.items()},
                "lora_train_steps": self.lora_train_steps}

    @classmethod
    def from_json(cls, data: dict | None) -> KnowledgeUpdate | None:
        if not data:
            return None
        return cls(data["questions"], data.get("lora_train_steps"),
                   {arm: UpdateArm.from_json(u) for arm, u in (data.get("arms") or {}).items()})


@dataclass
class Cost:
    """What an arm costs: latency, throughput, prompt size, and the one-off costs that apply to it."""

    latency_p50_s: float
    latency_p95_s: float
    tokens_per_s: float
    prompt_tokens_mean: float
    index_build_s: float | None  # RAG arms only
    finetune_s: float | None  # LoRA arms only
    update: UpdateArm | None = None  # when a knowledge update ran for this arm

    def to_json(self) -> dict:
        data = {"latency_p50_s": self.latency_p50_s, "latency_p95_s": self.latency_p95_s,
                "tokens_per_s": self.tokens_per_s, "prompt_tokens_mean": self.prompt_tokens_mean,
                "index_build_s": self.index_build_s, "finetune_s": self.finetune_s}
        if self.update is not None:
            data.update(update_s=self.update.update_s, update_fact_recall=self.update.fact_recall)
        return data

    @classmethod
    def from_json(cls, data: dict, update: UpdateArm | None = None) -> Cost:
        # `update`: the knowledge update's entry for this arm, which also knows how many it answered
        if "update_s" not in data:
            update = None
        elif update is None:
            update = UpdateArm(_maybe(data["update_s"]), _maybe(data.get("update_fact_recall")))
        return cls(_float(data.get("latency_p50_s")), _float(data.get("latency_p95_s")),
                   _float(data.get("tokens_per_s")), _float(data.get("prompt_tokens_mean")),
                   _maybe(data.get("index_build_s")), _maybe(data.get("finetune_s")), update)

    def column(self, key: str) -> float | None:
        """A cost table column by its results.json key (update_s and update_fact_recall included)."""
        if key in ("update_s", "update_fact_recall"):
            if self.update is None:
                return None
            return self.update.update_s if key == "update_s" else self.update.fact_recall
        return getattr(self, key)


@dataclass
class ArmResult:
    """One arm of the run: its quality per metric, its costs, and its latency per answer."""

    metrics: dict[str, Interval]  # metric name -> mean over questions with its interval
    cost: Cost
    latencies: list[float]  # seconds per answer, in question order

    def metric(self, name: str) -> Interval:
        return self.metrics.get(name, EMPTY)

    def to_json(self) -> dict:
        return {"metrics": _intervals_json(self.metrics), "cost": self.cost.to_json(),
                "latencies": list(self.latencies)}

    @classmethod
    def from_json(cls, data: dict, update: UpdateArm | None = None) -> ArmResult:
        return cls(_intervals(data.get("metrics")), Cost.from_json(data.get("cost") or {}, update),
                   [_float(s) for s in data.get("latencies") or []])


@dataclass(frozen=True)
class Difference:
    """Arm a minus arm b on one metric over the same questions: paired bootstrap mean, interval, p."""

    a: str
    b: str
    metric: str
    mean_diff: float
    low: float
    high: float
    p_value: float

    def to_json(self) -> dict:
        return {"a": self.a, "b": self.b, "metric": self.metric, "mean_diff": self.mean_diff, "low": self.low,
                "high": self.high, "p_value": self.p_value}

    @classmethod
    def from_json(cls, data: dict) -> Difference:
        return cls(data["a"], data["b"], data["metric"], _float(data.get("mean_diff")), _float(data.get("low")),
                   _float(data.get("high")), _float(data.get("p_value")))


@dataclass
class Splits:
    """The headline metric per source document (source -> arm -> interval), and fact recall on the facts
    the base model already knows vs new ones (arm -> interval; None when no question lists facts)."""

    by_source: dict[str, dict[str, Interval]] = field(default_factory=dict)
    known_facts: dict[str, Interval] | None = None
    new_facts: dict[str, Interval] | None = None

    def to_json(self) -> dict:
        data = {}
        if self.known_facts is not None and self.new_facts is not None:
            data = {"known_facts": _intervals_json(self.known_facts), "new_facts": _intervals_json(self.new_facts)}
        data["by_source"] = {src: _intervals_json(per_arm) for src, per_arm in self.by_source.items()}
        return data

    @classmethod
    def from_json(cls, data: dict | None) -> Splits:
        data = data or {}
        known, new = data.get("known_facts"), data.get("new_facts")
        return cls({src: _intervals(per_arm) for src, per_arm in (data.get("by_source") or {}).items()},
                   None if known is None else _intervals(known), None if new is None else _intervals(new))


@dataclass
class Retrieval:
    """hit@k, MRR and nDCG@10 against the chunks holding the gold evidence, overall and per question."""

    metrics: dict[str, Interval]
    per_question: dict[str, dict[str, float]]

    def to_json(self) -> dict:
        return {**_intervals_json(self.metrics), "per_question": self.per_question}

    @classmethod
    def from_json(cls, data: dict | None) -> Retrieval | None:
        if not data:
            return None
        per_question = {q: {name: _float(v) for name, v in scores.items()}
                        for q, scores in (data.get("per_question") or {}).items()}
        return cls({name: Interval.from_json(v) for name, v in data.items() if name != "per_question"}, per_question)


@dataclass
class ArmAnswer:
    answer: str
    scores: dict[str, float]  # metric name -> score for this answer, NaN where it does not apply


@dataclass
class QuestionResult:
    id: str
    question: str
    gold: str | None
    answers: dict[str, ArmAnswer]  # arm -> its answer

    def to_json(self) -> dict:
        return {"id": self.id, "question": self.question, "gold": self.gold,
                "answers": {arm: {"answer": a.answer, **a.scores} for arm, a in self.answers.items()}}

    @classmethod
    def from_json(cls, data: dict) -> QuestionResult:
        answers = {arm: ArmAnswer(body.get("answer", ""), {k: _float(v) for k, v in body.items() if k != "answer"})
                   for arm, body in (data.get("answers") or {}).items()}
        return cls(str(data["id"]), data.get("question", ""), data.get("gold"), answers)


@dataclass
class Results:
    """One evaluation run: results.json in memory."""

    name: str
    n_questions: int
    arms: dict[str, ArmResult]  # in the run's arm order
    differences: list[Difference]
    splits: Splits
    retrieval: Retrieval | None  # None when no arm retrieves
    costs: dict[str, Any]  # run-wide measurements as recorded: index_build_s, index_files, finetune_s, judge, ...
    knowledge_update: KnowledgeUpdate | None
    questions: list[QuestionResult]
    metric_names: list[str]  # the answer metrics, then any judge_* ones
    headline: str  # the metric of the per-source split and the quality-vs-cost plot
    provenance: dict[str, Any] = field(default_factory=dict)  # git, packages, model and data hashes, config
    plots: list[str] = field(default_factory=list)  # PNG file names beside results.json

    def to_json(self) -> dict:
        return clean({
            "arms": {arm: body.to_json() for arm, body in self.arms.items()},
            "differences": [d.to_json() for d in self.differences],
            "splits": self.splits.to_json(),
            "retrieval": self.retrieval.to_json() if self.retrieval else {},
            "costs": self.costs,
            "knowledge_update": self.knowledge_update.to_json() if self.knowledge_update else {},
            "questions": [q.to_json() for q in self.questions],
            "metric_names": list(self.metric_names),
            "headline": self.headline,
            "name": self.name,
            "n_questions": self.n_questions,
            "provenance": self.provenance,
            "plots": list(self.plots),
        })

    @classmethod
    def from_json(cls, data: dict) -> Results:
        update = KnowledgeUpdate.from_json(data.get("knowledge_update"))
        arms = {arm: ArmResult.from_json(body, update.arms.get(arm) if update else None)
                for arm, body in data["arms"].items()}
        return cls(
            name=data.get("name", ""), n_questions=data.get("n_questions", 0), arms=arms,
            differences=[Difference.from_json(d) for d in data.get("differences") or []],
            splits=Splits.from_json(data.get("splits")), retrieval=Retrieval.from_json(data.get("retrieval")),
            costs=dict(data.get("costs") or {}), knowledge_update=update,
            questions=[QuestionResult.from_json(q) for q in data.get("questions") or []],
            metric_names=list(data.get("metric_names") or []), headline=data.get("headline", "fact_recall"),
            provenance=dict(data.get("provenance") or {}), plots=list(data.get("plots") or []),
        )


def load_results(path: str | Path) -> Results:
    """A report folder's results.json (or the file itself), written by this version or an older one."""
    path = Path(path)
    file = path / RESULTS_FILE if path.is_dir() else path
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{file}: no results.json (run rag eval first)") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{file}: not valid JSON ({exc.msg})") from None
    try:
        return Results.from_json(data)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ConfigError(f"{file}: not eval results ({type(exc).__name__}: {exc})") from None
