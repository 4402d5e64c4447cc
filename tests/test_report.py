"""Eval results and reports without a model: results.json round trips (older files included), the one
loader's errors, markdown and HTML rendered from the same data, `compare` on known differences, and
the answer cache's recovery from a line cut short."""

import json
import math

import pytest

from eval.answers import AnswerCache, Passage, Record
from eval.render import compare, html_page, markdown
from eval.results import EMPTY, ArmResult, Cost, Difference, Interval, Results, Splits, UpdateArm, load_results

NAN = math.nan


def results(name: str, sha: str, recall: dict[str, float], f1: dict[str, float], p50: dict[str, float]) -> Results:
    """A hand-made run: fact recall and F1 per arm (NaN: not scored), latency p50 per arm."""
    def around(mean: float) -> Interval:
        return Interval(mean, mean - 0.1, mean + 0.1, 0 if math.isnan(mean) else 10)

    arms = {arm: ArmResult({"fact_recall": around(recall[arm]), "token_f1": around(f1[arm]), "citation_correct": EMPTY},
                           Cost(p50[arm], 2 * p50[arm], 20.0, 100.0 if arm == "base" else 400.0,
                                0.5 if arm == "rag" else None, None),
                           [p50[arm]])
            for arm in recall}
    return Results(name=name, n_questions=10, arms=arms, differences=[], splits=Splits(), retrieval=None, costs={},
                   knowledge_update=None, questions=[], metric_names=["fact_recall", "token_f1", "citation_correct"],
                   headline="fact_recall", provenance={"git_sha": sha, "git_dirty": False, "created": "today",
                                                       "settings": {"backend": "local"}})


def test_compare_prints_each_arm_metric_and_cost_of_two_runs(tmp_path):
    a = results("before", "1111111111aaaa", {"base": 0.5, "rag": 0.75}, {"base": 0.2, "rag": 0.4},
                {"base": 1.0, "rag": 1.5})
    b = results("after", "2222222222bbbb", {"base": 0.5, "rag": 0.9, "lora": 0.6},
                {"base": 0.25, "rag": NAN, "lora": 0.3}, {"base": 0.8, "rag": 2.0, "lora": 1.0})
    for run, folder in ((a, tmp_path / "a"), (b, tmp_path / "b")):
        folder.mkdir()
        (folder / "results.json").write_text(json.dumps(run.to_json()))
    assert compare(load_results(tmp_path / "a"), load_results(tmp_path / "b" / "results.json")) == [
        "A = before (1111111111)   B = after (2222222222)",
        "arm        metric                          A        B    B − A",
        "base       fact recall                 0.500    0.500   +0.000",
        "base       F1                          0.200    0.250   +0.050",
        "base       latency_p50_s               1.000    0.800   -0.200",
        "base       tokens_per_s               20.000   20.000   +0.000",
        "base       prompt_tokens_mean        100.000  100.000   +0.000",
        "rag        fact recall                 0.750    0.900   +0.150",
        "rag        F1                          0.400        –        –",
        "rag        latency_p50_s               1.500    2.000   +0.500",
        "rag        tokens_per_s               20.000   20.000   +0.000",
        "rag        prompt_tokens_mean        400.000  400.000   +0.000",
    ]  # citation correct: scored in neither run; lora: not in A


def test_results_json_round_trips_and_older_files_load(tmp_path):
    run = results("r", "abc", {"base": 0.5, "rag": 0.75}, {"base": 0.2, "rag": NAN}, {"base": 1.0, "rag": 1.5})
    run.differences = [Difference("rag", "base", "fact_recall", 0.25, 0.1, 0.4, 0.012)]
    run.arms["rag"].cost.update = UpdateArm(3.5, 0.5, 2)
    data = run.to_json()
    assert data["arms"]["rag"]["metrics"]["token_f1"] == {"mean": None, "low": None, "high": None, "n": 0}
    assert data["arms"]["rag"]["cost"]["update_s"] == 3.5 and "update_s" not in data["arms"]["base"]["cost"]
    assert data["retrieval"] == {} and data["knowledge_update"] == {} and data["splits"] == {"by_source": {}}
    assert Results.from_json(json.loads(json.dumps(data))).to_json() == data

    old = {key: value for key, value in data.items() if key not in ("headline", "plots", "questions")}
    (tmp_path / "results.json").write_text(json.dumps(old))  # as written before the headline metric existed
    loaded = load_results(tmp_path)
    assert loaded.headline == "fact_recall" and loaded.plots == [] and loaded.questions == []
    assert loaded.arms["rag"].metric("token_f1").n == 0 and math.isnan(loaded.arms["rag"].metric("token_f1").mean)
    assert loaded.arms["rag"].cost.column("update_s") == 3.5 and loaded.arms["base"].cost.column("update_s") is None


def test_the_loader_says_what_is_wrong_with_a_results_file(tmp_path):
    with pytest.raises(ValueError, match=r"results.json: no results.json \(run rag eval first\)"):
        load_results(tmp_path)
    (tmp_path / "results.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"results.json: not valid JSON"):
        load_results(tmp_path)
    (tmp_path / "results.json").write_text('{"name": "x"}')
    with pytest.raises(ValueError, match=r"results.json: not eval results \(KeyError: 'arms'\)"):
        load_results(tmp_path)


def test_markdown_and_html_are_rendered_from_the_same_data(tmp_path):
    run = results("r<1>", "abc", {"base": 0.5, "rag": 0.75}, {"base": 0.2, "rag": NAN}, {"base": 1.0, "rag": 1.5})
    run.plots = ["quality.png"]
    (tmp_path / "quality.png").write_bytes(b"\x89PNG")
    md = markdown(run)
    assert md.startswith("# Eval report: r<1>\n\n10 questions, arms base, rag, backend local; git abc, today.")
    assert "| metric | base | rag |\n|---|---|---|\n| fact recall | 0.50 [0.40, 0.60] | 0.75 [0.65, 0.85] |" in md
    assert "| | base | rag |" in md and "| index build (s) | – | 0.50 |" in md
    assert md.endswith("Plots: ![quality.png](quality.png)\n") and "Plots:" not in markdown(run, figures=False)
    page = html_page(run, tmp_path)
    assert "<title>r&lt;1&gt;</title>" in page and "<h1>Eval report: r&lt;1&gt;</h1>" in page
    assert "<tr><th>metric</th><th>base</th><th>rag</th></tr>" in page
    assert "<tr><td>F1</td><td>0.20 [0.10, 0.30]</td><td>–</td></tr>" in page
    assert page.count("<table>") == 2 and page.count("data:image/png;base64,iVBORw==") == 1 and "Plots:" not in page


def test_the_answer_cache_skips_a_line_cut_short_and_starts_a_new_one(tmp_path):
    path = tmp_path / "answers.jsonl"
    one = Record("q1", "rag", "Q?", "A [1].", [Passage("s.md", "c1", "text")], 1.0, 10, 3, key="k1")
    with AnswerCache(path) as cache:
        cache.add(one)
    path.write_text(path.read_text() + '{"qid": "q2", "arm": "ra')  # interrupted mid-write
    two = Record("q2", "rag", "Q2?", "B.", [], 2.0, None, None, key="k2")
    with AnswerCache(path) as cache:
        assert cache.get("q1", "rag", "k1") == one and cache.get("q1", "rag", "other") is None
        assert cache.get("q2", "rag", "k2") is None
        cache.add(two)
    with AnswerCache(path) as cache:
        assert cache.get("q1", "rag", "k1") == one and cache.get("q2", "rag", "k2") == two
    assert len(path.read_text().splitlines()) == 3
