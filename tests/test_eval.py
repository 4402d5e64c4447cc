"""The eval harness: config and input checks, scoring rules, the answer cache, and a full four-arm run
on data/sample with the tiny model (plumbing: its answers are noise), resumed, reported and compared."""

import json
import math
import os
import subprocess
import sys

import pytest

from conftest import ROOT, SAMPLE
from eval.answers import Passage, Record
from eval.config import EvalConfig, load_experiment
from eval.harness import select_questions
from eval.runner import read_qa
from eval.scoring import cited_numbers, score_answer, score_retrieval
from rag.prompts import NO_ANSWER

UPDATE = ROOT / "data" / "sample-update"


def test_read_qa_names_the_bad_line(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text('{"id": "a", "question": "Q?"}\n{"id": "a", "question": "R?"}\n')
    with pytest.raises(ValueError, match=r"qa.jsonl:2: duplicate id 'a'"):
        read_qa(path)
    path.write_text('{"question": ""}\n')
    with pytest.raises(ValueError, match=r"qa.jsonl:1: expected an object with a non-empty 'question'"):
        read_qa(path)
    path.write_text('{"question": "Q?", "answer": "A"}\n')
    assert read_qa(path)[0] == {"question": "Q?", "answer": "A", "id": "q1", "facts": [], "evidence": "",
                                "answerable": True}


def test_config_checks(tmp_path):
    with pytest.raises(ValueError, match="arms must be among base, rag, lora, lora\\+rag; got base, sft"):
        EvalConfig(qa="q", out="o", arms="base,sft")
    with pytest.raises(ValueError, match="the lora arms need an adapter"):
        EvalConfig(qa="q", out="o", arms="base,lora")
    with pytest.raises(ValueError, match="needs both update_docs and update_qa"):
        EvalConfig(qa="q", out="o", arms="rag", update_docs="d")
    with pytest.raises(ValueError, match=r"give limit \(3\) or sample \(5\), not both"):
        EvalConfig(qa="q", out="o", arms="base", limit=3, sample=5)
    (tmp_path / "config.toml").write_text('qa = "x.jsonl"\ncolour = "red"\n')
    with pytest.raises(ValueError, match=r"config.toml: unknown field\(s\) colour"):
        load_experiment(tmp_path)


def test_sample_is_seeded_and_keeps_file_order():
    questions = [{"id": f"q{n}"} for n in range(50)]
    picked = [q["id"] for q in select_questions(questions, EvalConfig(qa="q", out="o", arms="base", sample=8))]
    assert len(picked) == 8 and picked == sorted(picked, key=lambda i: int(i[1:]))
    assert picked == [q["id"] for q in select_questions(questions, EvalConfig(qa="q", out="o", arms="base", sample=8))]
    assert picked != [q["id"] for q in select_questions(questions, EvalConfig(qa="q", out="o", arms="base", sample=8,
                                                                             seed=1))]
    assert picked != [f"q{n}" for n in range(8)]  # not simply the first eight
    assert len(select_questions(questions, EvalConfig(qa="q", out="o", arms="base", sample=80))) == 50
    assert len(select_questions(questions, EvalConfig(qa="q", out="o", arms="base", limit=3))) == 3


def record(arm, answer, sources=()):
    return Record("q", arm, "Q?", answer, [Passage("s", f"c{n}", t) for n, t in enumerate(sources)], 1.0, 10, 5)


def test_scoring_rules_on_hand_made_answers():
    row = {"answer": "14 March 1887", "facts": ["1887"], "evidence": "The lighthouse was first lit on 14 March 1887.",
           "answerable": True}
    passages = ["Tea grows on hills.", "The lighthouse was first lit on 14 March 1887 by the keeper."]
    cited = score_answer(record("rag", "It was first lit on 14 March 1887 [2].", passages), row, 0.9)
    assert cited["fact_recall"] == 1.0 and cited["citation_correct"] == 1.0 and cited["semantic_sim"] == 0.9
    assert cited["exact_match"] == 0.0 and 0 < cited["token_f1"] < 1 and cited["false_abstention"] == 0.0
    assert cited["faithfulness"] == 1.0  # every content word is in the passages
    wrong = score_answer(record("rag", "It opened in 1887 [1].", passages), row, 0.5)
    assert wrong["citation_correct"] == 0.0
    base = score_answer(record("base", "1887"), row, 1.0)
    assert math.isnan(base["citation_correct"]) and math.isnan(base["faithfulness"])
    unanswerable = {"answer": "", "facts": [], "answerable": False}
    assert score_answer(record("rag", NO_ANSWER), unanswerable, math.nan)["abstention"] == 1.0
    assert score_answer(record("base", "At 9 am."), unanswerable, math.nan)["abstention"] == 0.0
    assert cited_numbers("see [2] and [1], again [2]") == [1, 2]
    ranking = [Passage("s", c, "") for c in ("x", "c1", "y")]
    assert score_retrieval(ranking, ["c1"], k=1)["hit_at_k"] == 0.0
    assert score_retrieval(ranking, ["c1"], k=3) == {"hit_at_k": 1.0, "mrr": 0.5, "ndcg_at_10": pytest.approx(1 / math.log2(3))}


@pytest.fixture(scope="module")
def eval_env(sample_collection, tiny_model_dir, tmp_path_factory):
    """Settings for the tiny model on the sample collection, and a tiny adapter trained 2 steps."""
    from rag.finetune import FinetuneConfig, train
    from rag.finetune_data import build_dataset
    from rag.settings import Settings

    adapters = tmp_path_factory.mktemp("eval-adapters")
    data = tmp_path_factory.mktemp("eval-data")
    build_dataset(sample_collection, data, paraphrases=2, exclude_questions=[r["question"] for r in read_qa(SAMPLE / "qa.jsonl")])
    train(FinetuneConfig(data=data, name="tiny", base_model=str(tiny_model_dir), adapters_dir=adapters, rank=4,
                         max_steps=2, batch_size=2, lr=5e-2, patience=0, check=0, progress=False))
    settings = Settings(home=sample_collection.folder.parent, collection="sample", adapters_dir=adapters,
                        model=str(tiny_model_dir), max_tokens=8, device="cpu")
    return settings


def test_four_arm_run_reports_every_metric_and_resumes(eval_env, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from eval.harness import run
    from eval.render import compare
    from eval.results import load_results

    rows = read_qa(SAMPLE / "qa.jsonl")
    n, with_facts = len(rows), sum(bool(r["facts"]) for r in rows)
    unanswerable = sum(not r["answerable"] for r in rows)
    config = EvalConfig(qa=SAMPLE / "qa.jsonl", out=tmp_path / "reports" / "report", adapter="tiny", bootstrap=200,
                        update_docs=UPDATE / "korvik_ferry.md", update_qa=UPDATE / "qa.jsonl", update_steps=2)
    results = run(config, eval_env)
    assert results.headline == "fact_recall" and results.splits.known_facts and results.splits.new_facts
    out = tmp_path / "reports" / "report"
    assert {p.name for p in out.iterdir()} == {"answers.jsonl", "results.json", "report.md", "report.html",
                                               "quality.png", "latency.png", "quality_vs_cost.png"}  # no scratch left
    saved = json.loads((out / "results.json").read_text())
    assert list(saved["arms"]) == ["base", "rag", "lora", "lora+rag"] and saved["n_questions"] == n
    for arm, body in saved["arms"].items():
        assert set(body["metrics"]) >= {"exact_match", "token_f1", "fact_recall", "semantic_sim", "abstention",
                                        "false_abstention", "citation_correct", "faithfulness"}
        fr = body["metrics"]["fact_recall"]
        assert fr["n"] == with_facts and fr["low"] <= fr["mean"] <= fr["high"]
        assert body["metrics"]["abstention"]["n"] == unanswerable
        assert body["cost"]["latency_p50_s"] > 0 and body["cost"]["prompt_tokens_mean"] > 0
        assert body["cost"]["update_s"] is None if arm == "base" else body["cost"]["update_s"] > 0
    assert saved["arms"]["rag"]["cost"]["prompt_tokens_mean"] > 3 * saved["arms"]["base"]["cost"]["prompt_tokens_mean"]
    assert saved["arms"]["rag"]["cost"]["index_build_s"] > 0 and saved["arms"]["lora"]["cost"]["finetune_s"] > 0
    assert saved["retrieval"]["hit_at_k"]["mean"] >= 0.8  # MiniLM + BM25 find the evidence (17-19 of 20 before)
    assert {(d["a"], d["b"]) for d in saved["differences"]} >= {("rag", "base"), ("lora+rag", "lora")}
    assert set(saved["splits"]["by_source"]) == {"korvik_lighthouse.md", "green_tea.txt", "tidy_t3_manual.html",
                                                 "marmot_field_notes.pdf"}
    assert saved["knowledge_update"]["questions"] == 4 and saved["provenance"]["git_sha"]
    assert saved["provenance"]["packages"]["torch"] and saved["provenance"]["qa_sha256"]
    assert load_results(out).to_json() == saved == results.to_json()  # what the run returned is what it wrote
    md = (out / "report.md").read_text()
    assert "| fact recall |" in md and "| knowledge update (s) |" in md and "lora+rag − rag" in md
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3 and "<table>" in page and "Plots:" not in page

    lines = (out / "answers.jsonl").read_text().count("\n")
    assert lines == 4 * n
    again = run(EvalConfig(qa=SAMPLE / "qa.jsonl", out=out, adapter="tiny", bootstrap=200), eval_env)
    assert (out / "answers.jsonl").read_text().count("\n") == lines  # every answer came from the cache
    assert again.arms["rag"].metrics["fact_recall"] == results.arms["rag"].metrics["fact_recall"]
    changed = run(EvalConfig(qa=SAMPLE / "qa.jsonl", out=out, arms="base", bootstrap=200),
                  eval_env.replace(max_tokens=4))
    assert (out / "answers.jsonl").read_text().count("\n") == lines + n  # a new setting re-asks
    table = compare(load_results(out), load_results(tmp_path / "reports" / "report"))
    assert table[1].split() == ["arm", "metric", "A", "B", "B", "−", "A"] and list(changed.arms) == ["base"]

    monkeypatch.chdir(tmp_path)  # the UI's eval page lists reports/*/ under the working folder
    page = AppTest.from_file(str(ROOT / "pages" / "1_Eval_reports.py"), default_timeout=60)
    page.run()
    assert not page.exception and page.selectbox[0].options == ["reports/report"]
    assert any("# Eval report: report" in m.value for m in page.markdown)
    assert not any("Plots:" in m.value for m in page.markdown)
    assert len(page.get("image")) == 3  # the three plots are shown


def test_the_answer_cache_is_keyed_on_the_messages_sent(eval_env, tmp_path, monkeypatch):
    """An unchanged rerun asks nothing; an interrupted one asks only what it lost; an edited RAG prompt
    re-asks the RAG arm and leaves the base arm's answers alone."""
    import rag.prompts
    from eval.harness import run

    config = EvalConfig(qa=SAMPLE / "qa.jsonl", out=tmp_path / "out", arms="base,rag", limit=3, bootstrap=200)
    answers = tmp_path / "out" / "answers.jsonl"

    def asked(before: list[str]) -> list[dict]:
        """The answers the last run appended to the cache."""
        return [json.loads(line) for line in answers.read_text().splitlines()[len(before):] if line.startswith("{")]

    run(config, eval_env)
    first = answers.read_text().splitlines()
    assert len(first) == 6
    run(config, eval_env)
    assert answers.read_text().splitlines() == first

    answers.write_text("\n".join(first[:4]) + "\n" + first[4][:30])  # killed while writing the fifth answer
    before = answers.read_text().splitlines()
    run(config, eval_env)
    assert [(r["qid"], r["arm"], r["key"]) for r in asked(before)] == [
        (r["qid"], r["arm"], r["key"]) for r in map(json.loads, first[4:])]

    before = answers.read_text().splitlines()
    monkeypatch.setattr(rag.prompts, "RAG_SYSTEM", rag.prompts.RAG_SYSTEM + " Answer in one sentence.")
    run(config, eval_env)
    again = asked(before)
    assert [r["arm"] for r in again] == ["rag"] * 3
    assert {r["key"] for r in again}.isdisjoint(json.loads(line)["key"] for line in first)
    before = answers.read_text().splitlines()
    run(config, eval_env)
    assert answers.read_text().splitlines() == before


@pytest.mark.slow
def test_llm_judge_grades_through_a_real_vllm_server(vllm_server):
    from eval.judge import judge_records

    records = [record("rag", "It was first lit in 1887 [1].", ["The lighthouse was first lit in 1887."]),
               record("base", "Bananas are yellow.")]
    judged = judge_records(vllm_server.base_url, "smollm2", records)
    assert judged.summary() == {"graded": 2, "failed": 0, "model": "smollm2"}
    assert set(judged.scores) == {("q", "rag"), ("q", "base")}
    for scores in judged.scores.values():
        assert set(scores) == {"judge_faithfulness", "judge_relevance"}
        assert all(0.0 <= value <= 1.0 for value in scores.values())


def test_cli_eval_run_from_an_experiment_folder_and_compare(eval_env, tmp_path):
    experiment = tmp_path / "exp"
    experiment.mkdir()
    (experiment / "config.toml").write_text(
        f'qa = "{SAMPLE / "qa.jsonl"}"\narms = ["base", "rag"]\nlimit = 3\nbootstrap = 200\n'
        f'[settings]\nmax_tokens = 4\n')
    env = {**os.environ, "RAG_HOME": str(eval_env.home), "RAG_COLLECTION": "sample", "RAG_MODEL": eval_env.model,
           "RAG_ADAPTERS_DIR": str(eval_env.adapters_dir)}
    ran = subprocess.run([sys.executable, "-m", "rag.cli", "eval", "run", str(experiment)], capture_output=True,
                         text=True, env=env, timeout=600)
    assert ran.returncode == 0, ran.stderr
    assert "# Eval report: exp" in ran.stdout and (experiment / "report" / "results.json").is_file()
    compared = subprocess.run([sys.executable, "-m", "rag.cli", "eval", "compare", str(experiment / "report"),
                               str(experiment / "report")], capture_output=True, text=True, env=env, timeout=120)
    assert compared.returncode == 0 and "+0.000" in compared.stdout
    missing = subprocess.run([sys.executable, "-m", "rag.cli", "eval", "compare", str(tmp_path), str(tmp_path)],
                             capture_output=True, text=True, env=env, timeout=120)
    assert missing.returncode == 2 and "no results.json" in missing.stderr


def test_questions_without_key_facts_are_split_by_f1(eval_env, tmp_path):
    """A set made from documents (like scripts/make_python_faq_beir.py's) has gold answers but no key facts:
    the per-source split and the paired rows fall back to F1 instead of showing empty fact-recall tables."""
    from eval.harness import run

    rows = [{**row, "facts": []} for row in read_qa(SAMPLE / "qa.jsonl") if row["answerable"]]
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    results = run(EvalConfig(qa=tmp_path / "qa.jsonl", out=tmp_path / "out", arms="base,rag", sample=6, bootstrap=200),
                  eval_env)
    assert results.n_questions == 6 and results.headline == "token_f1"
    assert results.splits.known_facts is None and "known_facts" not in results.to_json()["splits"]
    assert {d.metric for d in results.differences} == {"token_f1", "semantic_sim"}
    assert sum(per_arm["rag"].n for per_arm in results.splits.by_source.values()) == 6
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## F1 per source document" in report and "fact recall per source" not in report.lower()
    assert "| rag − base | fact recall |" not in report


def test_a_beir_folder_scores_retrieval_against_its_qrels(embedder, chunker, tiny_model_dir, tmp_path):
    from eval.beir import load_beir, write_beir, write_corpus_files
    from eval.harness import run
    from ingest.pipeline import ingest
    from rag.settings import Settings
    from rag.store import Collection

    corpus = {"d1": {"title": "", "text": "The Korvik ferry crossing takes forty minutes in calm weather."},
              "d2": {"title": "", "text": "Green tea is steamed or pan-fired soon after picking."},
              "d3": {"title": "", "text": "Marmots hibernate in family groups for about six months."}}
    queries = {"q1": "How long is the ferry crossing?", "q2": "How long do marmots hibernate?"}
    write_beir(tmp_path / "beir", corpus, queries, {"q1": {"d1": 1}, "q2": {"d3": 1}})
    docs = tmp_path / "docs"
    assert write_corpus_files(load_beir(tmp_path / "beir"), docs) == 3
    coll = Collection.open(tmp_path / "home" / "beir", embedder.name, embedder.dim, create=True)
    ingest([docs], coll, embedder, chunker)
    settings = Settings(home=tmp_path / "home", collection="beir", model=str(tiny_model_dir), max_tokens=4, device="cpu")
    results = run(EvalConfig(qa=None, beir=tmp_path / "beir", out=tmp_path / "out", arms="rag", bootstrap=200), settings)
    assert results.retrieval.per_question == {
        "q1": {"hit_at_k": 1.0, "mrr": 1.0, "ndcg_at_10": 1.0}, "q2": {"hit_at_k": 1.0, "mrr": 1.0, "ndcg_at_10": 1.0}}
    assert results.n_questions == 2 and results.arms["rag"].metrics["token_f1"].n == 0  # no gold answers
