"""Aggregate: per-question scores into one run's `Results`.

Per arm, each metric's mean with a bootstrap interval and the arm's costs; paired bootstrap
differences between arms; fact recall on facts the base model knows vs new ones; the headline
metric per source document; retrieval scores against the chunks that hold the evidence. It does not
run models (eval/runner.py), define the metrics (eval/scoring.py, eval/metrics.py) or write
anything (eval/report.py).
"""

from __future__ import annotations

import math
from collections import defaultdict

from eval import metrics
from eval.config import LORA_ARMS, RAG_ARMS, EvalConfig
from eval.results import (
    ArmAnswer,
    ArmResult,
    Cost,
    Difference,
    Interval,
    QuestionResult,
    Results,
    Retrieval,
    Splits,
)
from eval.runner import RunData
from eval.scoring import ANSWER_METRICS, RETRIEVAL_METRICS, score_answer, score_retrieval, similarities

PAIRS = (("rag", "base"), ("lora", "base"), ("lora+rag", "rag"), ("lora+rag", "lora"), ("rag", "lora"))
PAIRED_METRICS = ("fact_recall", "token_f1", "semantic_sim")


def interval(values: list[float], config: EvalConfig) -> Interval:
    """Mean and bootstrap interval of the values that are not NaN."""
    mean, low, high = metrics.bootstrap_ci(values, n_resamples=config.bootstrap, seed=config.seed)
    return Interval(mean, low, high, sum(1 for v in values if not math.isnan(v)))


def _cost(arm: str, records: list, data: RunData) -> Cost:
    latency = metrics.latency_summary([r.seconds for r in records])
    tokens = [r.completion_tokens for r in records if r.completion_tokens]
    prompts = [r.prompt_tokens for r in records if r.prompt_tokens]
    speed = sum(tokens) / sum(r.seconds for r in records if r.completion_tokens) if tokens else math.nan
    return Cost(latency_p50_s=latency["p50"], latency_p95_s=latency["p95"], tokens_per_s=speed,
                prompt_tokens_mean=sum(prompts) / len(prompts) if prompts else math.nan,
                index_build_s=data.costs.get("index_build_s") if arm in RAG_ARMS else None,
                finetune_s=data.costs.get("finetune_s") if arm in LORA_ARMS else None,
                update=data.update.arms.get(arm) if data.update else None)


def aggregate(config: EvalConfig, data: RunData, embedder, k: int = 3) -> Results:
    rows = {row["id"]: row for row in data.questions}
    qids = [row["id"] for row in data.questions]
    by_arm: dict[str, dict[str, dict[str, float]]] = defaultdict(dict)  # arm -> qid -> scores
    answers: dict[str, dict[str, str]] = defaultdict(dict)  # arm -> qid -> answer
    for record, sim in zip(data.records, similarities(embedder, data.records, rows)):
        scores = score_answer(record, rows[record.qid], sim)
        scores.update(data.judged.get((record.qid, record.arm), {}))
        by_arm[record.arm][record.qid] = scores
        answers[record.arm][record.qid] = record.answer
    judged = sorted({name for per_q in by_arm.values() for s in per_q.values() for name in s if name.startswith("judge_")})
    metric_names = list(ANSWER_METRICS) + judged

    arms = {}
    for arm in config.arms:
        records = [r for r in data.records if r.arm == arm]
        table = {name: interval([by_arm[arm][q].get(name, math.nan) for q in qids], config) for name in metric_names}
        arms[arm] = ArmResult(table, _cost(arm, records, data), [r.seconds for r in records])

    # Splits and the quality-vs-cost plot need one metric: fact recall when the questions list key facts,
    # else token F1 (a BEIR-made set has gold answers but no facts). Paired rows only for scored metrics.
    headline = "fact_recall" if any(row.get("facts") for row in data.questions) else "token_f1"
    paired = [name for name in PAIRED_METRICS if any(arms[arm].metrics[name].n for arm in config.arms)]
    differences = []
    for a, b in PAIRS:
        if a in by_arm and b in by_arm:
            for name in paired:
                diff = metrics.paired_bootstrap([by_arm[a][q][name] for q in qids], [by_arm[b][q][name] for q in qids],
                                                n_resamples=config.bootstrap, seed=config.seed)
                differences.append(Difference(a, b, name, **diff))

    return Results(
        name=config.name, n_questions=len(data.questions), arms=arms, differences=differences,
        splits=_splits(config, by_arm, rows, qids, headline), retrieval=_retrieval(config, data, qids, k),
        costs=data.costs, knowledge_update=data.update,
        questions=[QuestionResult(q, rows[q]["question"], rows[q].get("answer"),
                                  {arm: ArmAnswer(answers[arm][q], by_arm[arm][q]) for arm in config.arms})
                   for q in qids],
        metric_names=metric_names, headline=headline,
    )


def _splits(config: EvalConfig, by_arm: dict, rows: dict, qids: list[str], headline: str) -> Splits:
    splits = Splits()
    scored = {q for q in qids if "base" in by_arm and not math.isnan(by_arm["base"][q]["fact_recall"])}
    if scored:  # facts the base model already knows (it recalls them all) vs new facts
        known = {q for q in scored if by_arm["base"][q]["fact_recall"] == 1.0}
        splits.known_facts, splits.new_facts = (
            {arm: interval([by_arm[arm][q]["fact_recall"] for q in qids if q in group], config) for arm in config.arms}
            for group in (known, scored - known))
    sources = sorted({rows[q].get("source") for q in qids if rows[q].get("source")})
    splits.by_source = {src: {arm: interval([by_arm[arm][q][headline] for q in qids if rows[q].get("source") == src],
                                            config) for arm in config.arms} for src in sources}
    return splits


def _retrieval(config: EvalConfig, data: RunData, qids: list[str], k: int) -> Retrieval | None:
    if not data.rankings:
        return None
    per_q = {q: score_retrieval(data.rankings[q], data.relevant.get(q, []), k) for q in qids}
    return Retrieval({name: interval([per_q[q][name] for q in qids], config) for name in RETRIEVAL_METRICS}, per_q)
