"""Per-answer and per-question scores, offline: no LLM judge unless one is configured (eval/judge.py).

Answers (every arm): exact match, token F1, fact recall, semantic similarity to the gold answer
(cosine of the embedder's vectors), abstention on unanswerable questions, false abstention on
answerable ones. RAG arms also: whether the answer cites a passage, citation correctness (a passage the answer cites by number holds
the gold evidence) and a faithfulness proxy (share of the answer's content words found in the
passages it was given). Retrieval (arm-independent): hit@k, MRR and nDCG@10 against the chunks that
hold the evidence. NaN marks "does not apply"; aggregates skip it. It does not run models.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

from eval import metrics
from eval.config import RAG_ARMS

if TYPE_CHECKING:
    from eval.answers import Passage, Record

ANSWER_METRICS = ("exact_match", "token_f1", "fact_recall", "semantic_sim", "abstention", "false_abstention",
                  "cites", "citation_correct", "faithfulness")
RETRIEVAL_METRICS = ("hit_at_k", "mrr", "ndcg_at_10")
_CITATION = re.compile(r"\[(\d{1,2})\]")


def cited_numbers(answer: str) -> list[int]:
    return sorted({int(n) for n in _CITATION.findall(answer)})


def score_answer(record: Record, row: dict, similarity: float) -> dict[str, float]:
    nan = math.nan
    answer = record.answer
    abstained = metrics.is_abstention(answer)
    answerable = bool(row.get("answerable", True))
    scores = {name: nan for name in ANSWER_METRICS}
    if answerable:
        gold = row.get("answer") or ""
        if gold:
            scores["exact_match"] = metrics.exact_match(answer, gold)
            scores["token_f1"] = metrics.token_f1(answer, gold)
            scores["semantic_sim"] = similarity
        scores["fact_recall"] = metrics.fact_recall(answer, row.get("facts") or [])
        scores["false_abstention"] = float(abstained)
    else:
        scores["abstention"] = float(abstained)
    if record.arm in RAG_ARMS and answerable and not abstained:
        numbers = [n for n in cited_numbers(answer) if 1 <= n <= len(record.sources)]
        scores["cites"] = float(bool(numbers))  # citation_correct is NaN for answers that cite nothing
        if row.get("evidence"):
            scores["citation_correct"] = metrics.citation_correct(
                [record.sources[n - 1].text for n in numbers], row["evidence"])
        # citation markers are not claims: "[2]" must not count as an unsupported word
        scores["faithfulness"] = metrics.faithfulness_proxy(_CITATION.sub(" ", answer), [s.text for s in record.sources])
    return scores


def score_retrieval(ranking: list[Passage], relevant: list[str], k: int) -> dict[str, float]:
    if not relevant:
        return {name: math.nan for name in RETRIEVAL_METRICS}
    ids = [passage.chunk_id for passage in ranking]
    return {
        "hit_at_k": metrics.hit_at_k(ids, relevant, k),
        "mrr": metrics.reciprocal_rank(ids, relevant),
        "ndcg_at_10": metrics.ndcg_at_k(ids, {cid: 1 for cid in relevant}, 10),
    }


def similarities(embedder, records: list[Record], rows_by_id: dict[str, dict]) -> list[float]:
    """Cosine similarity of each answer to its gold answer, embedded in one batch each side."""
    pairs = [(r.answer, rows_by_id[r.qid].get("answer") or "") for r in records]
    if not pairs:
        return []
    answers = embedder.embed([a or " " for a, _ in pairs])
    golds = embedder.embed([g or " " for _, g in pairs])
    return [metrics.cosine(a, g) if gold else math.nan for a, g, (_, gold) in zip(answers, golds, pairs)]
