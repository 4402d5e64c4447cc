"""Metrics: pure functions that score answers, retrieval rankings and citations, and summarise runs.

Answer metrics follow SQuAD; retrieval metrics follow trec_eval as BEIR reports them; the rest are
this project's proxies, each defined in its docstring. A metric that is undefined for an item (no
gold facts, nothing cited, an abstention) returns NaN, and the summaries here skip NaN, so callers
can average per-question values directly. Nothing here loads a model, reads files or calls a
network service: semantic similarity is embedded by the caller and only compared here (`cosine`).
"""

from __future__ import annotations

import math
import re
import string
import unicodedata
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence

import numpy as np

from rag.attribution import STOPWORDS, WORD
from rag.prompts import ABSTENTION_PHRASES, is_abstention  # noqa: F401  (the product's own reading)

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")  # the comma in 1,200 (not in 1,2 or 1,2345)
_LINE_BREAK_HYPHEN = re.compile(r"(?<=[^\W\d_])-[ \t]*\r?\n\s*(?=[^\W\d_])")  # "infor-\nmation"


# --- answers (SQuAD) -------------------------------------------------------------------------------


def normalize_answer(text: str) -> str:
    """SQuAD v1.1 normalisation: lowercase, drop ASCII punctuation, drop articles a/an/the, collapse
    whitespace (Rajpurkar et al. 2016, the official evaluate-v1.1.py)."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(pred: str, gold: str) -> float:
    """SQuAD exact match: 1.0 when the normalised prediction equals the normalised gold, else 0.0."""
    return float(normalize_answer(pred) == normalize_answer(gold))


def token_f1(pred: str, gold: str) -> float:
    """SQuAD token F1: harmonic mean of precision and recall of the normalised tokens, counted as
    multisets. When either side normalises to no tokens, 1.0 if both do, else 0.0 (SQuAD v2.0)."""
    pred_tokens = normalize_answer(pred).split()
    gold_tokens = normalize_answer(gold).split()
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)
    same = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if same == 0:
        return 0.0
    precision = same / len(pred_tokens)
    recall = same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def _tokens(text: str) -> list[str]:
    """Lowercased word and number tokens, robust to layout: Unicode compatibility forms folded,
    words hyphenated across a line break rejoined, thousands separators dropped (1,200 -> 1200),
    and every other punctuation mark a token boundary (so "two-year" reads as "two year")."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = _LINE_BREAK_HYPHEN.sub("", text)
    return WORD.findall(_THOUSANDS.sub("", text))


def _content_tokens(text: str) -> list[str]:
    return [token for token in _tokens(text) if token not in STOPWORDS]


def fact_recall(answer: str, facts: Sequence[str]) -> float:
    """Share of the gold key facts found in the answer (this project's metric).

    Both sides are tokenised by `_tokens`; a fact is found when its tokens occur consecutively in
    the answer's, the last one allowed to be a prefix when it is a word ("steam" finds "steamed",
    "Monday" finds "Mondays") but never when it is a number ("19" does not find "190"). The facts
    are all counted; one fact may list alternatives separated by "|" ("six months|6 months"), and is
    found when any of them is. NaN when `facts` is empty (nothing to recall): callers skip NaN.
    """
    if not facts:
        return math.nan
    answer_tokens = _tokens(answer)
    found = sum(any(_contains_fact(answer_tokens, _tokens(alt)) for alt in fact.split("|")) for fact in facts)
    return found / len(facts)


def _contains_fact(tokens: list[str], fact: list[str]) -> bool:
    if not fact:
        return False
    *head, last = fact
    for start in range(len(tokens) - len(fact) + 1):
        if tokens[start:start + len(head)] != head:
            continue
        candidate = tokens[start + len(head)]
        if candidate == last or (not last[-1].isdigit() and candidate.startswith(last)):
            return True
    return False


# --- retrieval (trec_eval / BEIR) ------------------------------------------------------------------


def _check_k(k: int) -> None:
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")


def hit_at_k(ranked_ids: Sequence[Hashable], relevant_ids: Iterable[Hashable], k: int) -> float:
    """Hit rate at k (success@k): 1.0 when any of the first k ranked ids is relevant, else 0.0.
    NaN when there are no relevant ids (trec_eval skips queries without judgements)."""
    _check_k(k)
    relevant = set(relevant_ids)
    if not relevant:
        return math.nan
    return float(any(doc_id in relevant for doc_id in ranked_ids[:k]))


def reciprocal_rank(ranked_ids: Sequence[Hashable], relevant_ids: Iterable[Hashable]) -> float:
    """Reciprocal rank of the first relevant id (1/rank, ranks from 1; 0.0 when none is ranked);
    its mean over queries is MRR. NaN when there are no relevant ids."""
    relevant = set(relevant_ids)
    if not relevant:
        return math.nan
    for rank, doc_id in enumerate(ranked_ids, start=1):
        if doc_id in relevant:
            return 1.0 / rank
    return 0.0


def ndcg_at_k(ranked_ids: Sequence[Hashable], relevance: Mapping[Hashable, int], k: int = 10) -> float:
    """Normalised discounted cumulative gain at k with graded relevance, as trec_eval's ndcg_cut
    (which BEIR reports): DCG@k = sum over ranks i = 1..k of rel_i / log2(i + 1), linear gain,
    unjudged or non-positive grades gain 0; divided by the ideal DCG@k, the same sum over the
    judged grades sorted in decreasing order. A doc id ranked twice counts at its first rank.
    NaN when no grade is positive (no ideal ranking to compare with)."""
    _check_k(k)
    ideal = sorted((grade for grade in relevance.values() if grade > 0), reverse=True)[:k]
    if not ideal:
        return math.nan
    ideal_dcg = sum(grade / math.log2(rank + 1) for rank, grade in enumerate(ideal, start=1))
    seen: set[Hashable] = set()
    dcg = 0.0
    for rank, doc_id in enumerate(ranked_ids[:k], start=1):
        if doc_id not in seen:
            seen.add(doc_id)
            dcg += max(relevance.get(doc_id, 0), 0) / math.log2(rank + 1)
    return dcg / ideal_dcg


# --- evidence and citations (this project: gold evidence is a sentence, not a document id) ---------


def evidence_in_text(evidence: str, text: str, overlap_threshold: float | None = 0.8) -> bool:
    """True when the text holds the gold evidence sentence.

    First, containment: the evidence's `_tokens` occur consecutively in the text's, which makes the
    match indifferent to case, punctuation, line breaks, spacing, hyphenation across a line break
    and "two-year" versus "two year". Failing that, a token-overlap fallback for paraphrased or
    OCR-damaged copies: True when at least `overlap_threshold` of the evidence's distinct content
    words (stopwords dropped; all words when that leaves none) occur anywhere in the text. Word
    order is ignored there, so a long text can pass on a short evidence by chance; pass
    `overlap_threshold=None` for containment only.
    """
    evidence_tokens = _tokens(evidence)
    if not evidence_tokens:
        raise ValueError("evidence is empty: unanswerable questions have no evidence to match")
    if overlap_threshold is not None and not 0.0 < overlap_threshold <= 1.0:
        raise ValueError(f"overlap_threshold must be in (0, 1] or None, got {overlap_threshold}")
    text_tokens = _tokens(text)
    if " ".join(evidence_tokens) in " ".join(text_tokens) and _contains_run(text_tokens, evidence_tokens):
        return True
    if overlap_threshold is None:
        return False
    words = set(_content_tokens(evidence)) or set(evidence_tokens)
    return len(words & set(text_tokens)) / len(words) >= overlap_threshold


def _contains_run(tokens: list[str], run: list[str]) -> bool:
    # The joined-string test above is a fast filter; this one respects token boundaries ("at" in "cat").
    n = len(run)
    return any(tokens[i:i + n] == run for i in range(len(tokens) - n + 1))


def citation_correct(cited_texts: Sequence[str], evidence: str) -> float:
    """1.0 when any cited chunk's text holds the evidence (`evidence_in_text`, default threshold),
    else 0.0; NaN when nothing was cited, so citation accuracy averages over answers that cite."""
    if not cited_texts:
        return math.nan
    return float(any(evidence_in_text(evidence, text) for text in cited_texts))


def faithfulness_proxy(answer: str, contexts: Sequence[str]) -> float:
    """Share of the answer's content tokens (`_tokens` minus STOPWORDS; numbers kept) that occur
    anywhere in the concatenated contexts: a lexical stand-in for "supported by the retrieved
    text", blind to paraphrase and negation. NaN for an empty answer, an abstention, or an answer
    of stopwords only."""
    if not answer.strip() or is_abstention(answer):
        return math.nan
    words = _content_tokens(answer)
    if not words:
        return math.nan
    context = set(_tokens("\n".join(contexts)))
    return sum(word in context for word in words) / len(words)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two 1-D vectors; NaN when either has zero length."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"cosine needs two 1-D vectors of one length, got shapes {a.shape} and {b.shape}")
    norms = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b) / norms if norms > 0 else math.nan


# --- summaries over questions -----------------------------------------------------------------------

_BOOTSTRAP_CELLS = 4_000_000  # resample matrix entries per batch: bounds memory for long runs


def _bootstrap_means(values: np.ndarray, n_resamples: int, confidence: float, seed: int) -> np.ndarray:
    """(n_resamples,) means of resamples drawn with replacement from `values`."""
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    rng = np.random.default_rng(seed)
    n = len(values)
    batch = max(1, _BOOTSTRAP_CELLS // n)
    means = [
        values[rng.integers(0, n, size=(min(batch, n_resamples - start), n))].mean(axis=1)
        for start in range(0, n_resamples, batch)
    ]
    return np.concatenate(means)


def _percentile_interval(means: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1.0 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_ci(values: Iterable[float], n_resamples: int = 2000, confidence: float = 0.95,
                 seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high): the mean of the non-NaN values and its percentile bootstrap confidence
    interval (Efron & Tibshirani 1993, ch. 13). (nan, nan, nan) when no value is left."""
    array = np.asarray(list(values), dtype=np.float64)
    array = array[~np.isnan(array)]
    if array.size == 0:
        return math.nan, math.nan, math.nan
    means = _bootstrap_means(array, n_resamples, confidence, seed)
    return (float(array.mean()), *_percentile_interval(means, confidence))


def paired_bootstrap(a: Sequence[float], b: Sequence[float], n_resamples: int = 2000,
                     confidence: float = 0.95, seed: int = 0) -> dict[str, float]:
    """Paired bootstrap over per-question scores of two systems on the same questions.

    The differences d = a - b (pairs with NaN on either side dropped) are resampled with
    replacement. Returns mean_diff (mean of d), low and high (percentile interval of the resampled
    means), p_value = min(1, 2 * min(P(d* <= 0), P(d* >= 0))) over the resampled means d*: the
    two-sided share of the bootstrap distribution on the far side of zero, which falls below
    1 - confidence when (up to ties) the interval excludes zero (Koehn 2004; Efron & Tibshirani
    1993, ch. 16). All NaN when no pair is left.
    """
    first = np.asarray(a, dtype=np.float64)
    second = np.asarray(b, dtype=np.float64)
    if first.shape != second.shape or first.ndim != 1:
        raise ValueError(f"paired scores need two 1-D sequences of one length, got {first.shape} and {second.shape}")
    diffs = (first - second)[~(np.isnan(first) | np.isnan(second))]
    if diffs.size == 0:
        return {"mean_diff": math.nan, "low": math.nan, "high": math.nan, "p_value": math.nan}
    means = _bootstrap_means(diffs, n_resamples, confidence, seed)
    low, high = _percentile_interval(means, confidence)
    p_value = min(1.0, 2 * min(float(np.mean(means <= 0)), float(np.mean(means >= 0))))
    return {"mean_diff": float(diffs.mean()), "low": low, "high": high, "p_value": p_value}


def latency_summary(seconds: Iterable[float]) -> dict[str, float]:
    """Median (p50), 95th percentile (p95, numpy's linear interpolation) and mean of the non-NaN
    latencies, and their count n; NaN statistics when there are none."""
    array = np.asarray(list(seconds), dtype=np.float64)
    array = array[~np.isnan(array)]
    if array.size == 0:
        return {"p50": math.nan, "p95": math.nan, "mean": math.nan, "n": 0}
    p50, p95 = np.percentile(array, [50, 95])
    return {"p50": float(p50), "p95": float(p95), "mean": float(array.mean()), "n": int(array.size)}
