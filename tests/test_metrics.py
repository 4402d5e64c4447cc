import math

import numpy as np
import pytest

from eval.metrics import (
    bootstrap_ci,
    citation_correct,
    cosine,
    evidence_in_text,
    exact_match,
    fact_recall,
    faithfulness_proxy,
    hit_at_k,
    is_abstention,
    latency_summary,
    ndcg_at_k,
    normalize_answer,
    paired_bootstrap,
    reciprocal_rank,
    token_f1,
)
from rag.prompts import NO_ANSWER


def test_normalize_answer_follows_squad():
    assert normalize_answer("  The Cat,  sat on A mat! ") == "cat sat on mat"
    assert normalize_answer("An apple\nthere") == "apple there"  # "there" keeps its "the"


def test_exact_match_is_exact_after_normalisation():
    assert exact_match("The 31 metres.", "31 metres") == 1.0
    assert exact_match("It is 31 metres tall", "31 metres") == 0.0  # containment is not a match


def test_token_f1_by_hand():
    # pred "the cat sat" -> [cat, sat]; gold "cat sat down" -> [cat, sat, down]; 2 shared tokens:
    # precision 2/2 = 1, recall 2/3, F1 = 2 * 1 * 2/3 / (1 + 2/3) = 0.8
    assert token_f1("the cat sat", "cat sat down") == pytest.approx(0.8)
    # tokens count as multisets: pred [cat, cat] vs gold [cat]: 1 shared, P = 1/2, R = 1, F1 = 2/3
    assert token_f1("cat cat", "cat") == pytest.approx(2 / 3)
    assert token_f1("dog", "cat") == 0.0
    assert token_f1("the", "") == 1.0 and token_f1("cat", "a") == 0.0  # empty after normalisation


def test_fact_recall_counts_found_facts():
    assert fact_recall("It was first lit in 1887 by Brekke.", ["1887", "brekke", "Solberg"]) == pytest.approx(2 / 3)
    assert fact_recall("about 1,200 visitors a year", ["1200"]) == 1.0
    assert fact_recall("about 1200 visitors", ["1,200"]) == 1.0
    assert fact_recall("it holds 0.4\nlitres", ["0.4 litres"]) == 1.0
    assert fact_recall("a two year warranty", ["two-year"]) == 1.0
    assert fact_recall("Japanese teas are steamed", ["steam"]) == 1.0  # a word may be a prefix
    assert fact_recall("It is 190 metres", ["19"]) == 0.0  # a number may not
    assert fact_recall("It is 1.9 metres", ["19"]) == 0.0
    assert math.isnan(fact_recall("anything", []))
    assert fact_recall("about 6 months", ["six months|6 months"]) == 1.0  # alternatives of one fact
    assert fact_recall("about 6 months in 1887", ["six months|6 months", "1888"]) == 0.5


@pytest.mark.parametrize("answer", [
    NO_ANSWER,
    "i DON'T know.",
    "I don\u2019t know based on the provided documents.",
    "The answer is not in the provided context.",
    "I cannot answer that from these passages.",
    "There is no information about the gift shop.",
    "The manual does not mention the cable colour.",
    "The text doesn't say.",
])
def test_abstentions_are_detected(answer):
    assert is_abstention(answer)


@pytest.mark.parametrize("answer", ["14 March 1887", "The tower is 31 metres tall.", ""])
def test_answers_are_not_abstentions(answer):
    assert not is_abstention(answer)


def test_hit_at_k_and_reciprocal_rank():
    ranked = ["d3", "d1", "d7"]
    assert hit_at_k(ranked, {"d1"}, k=1) == 0.0
    assert hit_at_k(ranked, {"d1"}, k=2) == 1.0
    assert reciprocal_rank(ranked, {"d7", "d1"}) == 0.5  # first relevant at rank 2
    assert reciprocal_rank(ranked, {"d9"}) == 0.0
    assert math.isnan(hit_at_k(ranked, set(), k=3)) and math.isnan(reciprocal_rank(ranked, []))
    with pytest.raises(ValueError, match="k must be positive, got 0"):
        hit_at_k(ranked, {"d1"}, k=0)


def test_ndcg_by_hand():
    # ranked a, b, c with grades a=1, c=2, d=1 (d not retrieved):
    # DCG@3  = 1/log2(2) + 0/log2(3) + 2/log2(4) = 1 + 0 + 1 = 2
    # IDCG@3 = grades sorted 2, 1, 1: 2/log2(2) + 1/log2(3) + 1/log2(4) = 2 + 0.63093 + 0.5 = 3.13093
    # nDCG@3 = 2 / 3.13093 = 0.63879
    relevance = {"a": 1, "c": 2, "d": 1}
    assert ndcg_at_k(["a", "b", "c"], relevance, k=3) == pytest.approx(0.638788, abs=1e-6)
    # at k=1 only a counts: DCG = 1, IDCG = 2 -> 0.5
    assert ndcg_at_k(["a", "b", "c"], relevance, k=1) == pytest.approx(0.5)
    assert ndcg_at_k(["c", "a", "d"], relevance, k=3) == pytest.approx(1.0)
    assert ndcg_at_k(["a", "a", "a"], {"a": 1}, k=3) == pytest.approx(1.0)  # repeats count once
    assert math.isnan(ndcg_at_k(["a"], {"a": 0}, k=10))


def test_evidence_matches_across_line_breaks_and_hyphenation():
    evidence = "The tower is 31 metres tall and was first lit in 1887."
    chunk = "History.\nThe tower is 31\nmetres  tall and was first\nlit in 1887. It has 142 steps."
    assert evidence_in_text(evidence, chunk)
    assert evidence_in_text("Alpine marmots hibernate for about six months",
                            "alpine marmots hiber-\nnate for about six months, from October")
    assert not evidence_in_text(evidence, "The lighthouse has 142 steps and a gift shop.")


def test_evidence_overlap_fallback_and_its_threshold():
    evidence = "Charge the Tidy T3 for at least four hours before its first run."
    # content words: charge, tidy, t3, least, four, hours, before, first, run -> 9; reordered text has 8
    reordered = "Before the first run, charge at least four hours: Tidy (the T3) needs it."
    assert evidence_in_text(evidence, reordered.replace("run", "use"), overlap_threshold=0.8)  # 8/9 = 0.89
    assert not evidence_in_text(evidence, reordered.replace("run", "use"), overlap_threshold=0.9)
    assert not evidence_in_text(evidence, reordered, overlap_threshold=None)  # containment only
    assert not evidence_in_text("the cat", "concatenate", overlap_threshold=None)  # token boundaries
    with pytest.raises(ValueError, match="evidence is empty"):
        evidence_in_text("  ", "text")


def test_citation_correct():
    evidence = "The first keeper was Ingrid Solberg"
    assert citation_correct(["Tea notes.", "The first keeper was\nIngrid Solberg, until 1911."], evidence) == 1.0
    assert citation_correct(["Tea notes."], evidence) == 0.0
    assert math.isnan(citation_correct([], evidence))


def test_faithfulness_proxy():
    contexts = ["The tower is 31 metres tall.", "It was first lit in 1887."]
    # content tokens of the answer: tower, 31, metres, painted, red -> 3 of 5 in the contexts
    assert faithfulness_proxy("The tower is 31 metres and painted red.", contexts) == pytest.approx(0.6)
    assert faithfulness_proxy("It was lit in 1887.", contexts) == 1.0
    assert math.isnan(faithfulness_proxy("", contexts))
    assert math.isnan(faithfulness_proxy(NO_ANSWER, contexts))


def test_cosine():
    assert cosine(np.array([1.0, 0.0]), np.array([1.0, 1.0])) == pytest.approx(1 / math.sqrt(2))
    assert cosine(np.array([1.0, 2.0]), np.array([-1.0, -2.0])) == pytest.approx(-1.0)
    assert math.isnan(cosine(np.zeros(3), np.ones(3)))
    with pytest.raises(ValueError, match=r"got shapes \(2,\) and \(3,\)"):
        cosine(np.ones(2), np.ones(3))


def test_bootstrap_ci():
    assert bootstrap_ci([0.5, 0.5, 0.5, math.nan]) == (0.5, 0.5, 0.5)  # constant: zero width
    mean, low, high = bootstrap_ci([0.0, 1.0] * 50, seed=1)
    assert mean == 0.5 and 0.38 < low < 0.45 and 0.55 < high < 0.62  # normal approx: 0.5 +- 0.098
    assert bootstrap_ci([0.0, 1.0] * 50, seed=1) == (mean, low, high)  # seeded: reproducible
    assert all(math.isnan(x) for x in bootstrap_ci([math.nan]))
    with pytest.raises(ValueError, match="confidence must be between 0 and 1, got 95"):
        bootstrap_ci([1.0], confidence=95)


def test_paired_bootstrap_finds_a_clear_difference_and_not_a_null_one():
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 1, 200)
    better = paired_bootstrap(base + 0.1, base)
    assert better["mean_diff"] == pytest.approx(0.1)
    assert better["p_value"] == 0.0 and better["low"] > 0.09
    noise = rng.normal(0, 0.1, 200)
    null = paired_bootstrap(base + noise - noise.mean(), base)  # mean difference exactly 0
    assert null["mean_diff"] == pytest.approx(0.0, abs=1e-12)
    assert null["p_value"] > 0.5 and null["low"] < 0 < null["high"]
    dropped = paired_bootstrap([1.0, math.nan, 3.0], [0.0, 5.0, math.nan])  # only the first pair stays
    assert dropped["mean_diff"] == 1.0 and dropped["p_value"] == 0.0
    with pytest.raises(ValueError, match="one length"):
        paired_bootstrap([1.0, 2.0], [1.0])


def test_latency_summary():
    summary = latency_summary([1.0, 2.0, 3.0, 4.0, 10.0])
    # p95 by linear interpolation: position 0.95 * 4 = 3.8 -> 4 + 0.8 * (10 - 4) = 8.8
    assert summary == {"p50": 3.0, "p95": pytest.approx(8.8), "mean": 4.0, "n": 5}
    assert latency_summary([])["n"] == 0 and math.isnan(latency_summary([])["p50"])
