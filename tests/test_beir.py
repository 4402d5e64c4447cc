import json

import pytest

from eval.beir import BeirSet, load_beir, write_beir

CORPUS = {
    "d1": {"title": "Lighthouse", "text": "The Korvik Island Lighthouse was first lit on 14 March 1887."},
    "d2": {"title": "", "text": "Green tea is best brewed around 70 to 80 \u00b0C."},
}
QUERIES = {"q1": "When was the lighthouse first lit?", "q2": "How hot should tea water be?", "q3": "Unjudged?"}
QRELS = {"q1": {"d1": 1}, "q2": {"d2": 2, "d1": 0}}


@pytest.fixture
def folder(tmp_path):
    write_beir(tmp_path, CORPUS, QUERIES, QRELS)
    return tmp_path


def test_round_trip(folder):
    assert load_beir(folder) == BeirSet(CORPUS, QUERIES, QRELS)
    assert (folder / "qrels" / "test.tsv").read_text().splitlines()[:2] == ["query-id\tcorpus-id\tscore", "q1\td1\t1"]
    assert "\u00b0C" in (folder / "corpus.jsonl").read_text(encoding="utf-8")  # written as UTF-8, not escaped


def test_splits_and_numeric_ids(tmp_path):
    write_beir(tmp_path, CORPUS, QUERIES, {"q1": {"d1": 1}}, split="dev")
    (tmp_path / "corpus.jsonl").write_text(json.dumps({"_id": 7, "text": "seven"}) + "\n\n")
    (tmp_path / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\nq1\t7\t1\n")
    loaded = load_beir(tmp_path, split="dev")
    assert loaded.corpus == {"7": {"title": "", "text": "seven"}} and loaded.qrels == {"q1": {"7": 1}}


def _edit(path, line_number, new_line):
    lines = path.read_text().splitlines()
    lines[line_number - 1] = new_line
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(("name", "line", "content", "message"), [
    ("corpus.jsonl", 2, '{"_id": "d2", "text": ', r"corpus\.jsonl:2: bad JSON \(Expecting value"),
    ("corpus.jsonl", 2, '["d2"]', r"corpus\.jsonl:2: expected a JSON object, got list"),
    ("corpus.jsonl", 2, '{"text": "no id"}', r"corpus\.jsonl:2: missing '_id'"),
    ("corpus.jsonl", 2, '{"_id": "d1", "text": "again"}', r"corpus\.jsonl:2: duplicate _id 'd1'"),
    ("queries.jsonl", 3, '{"_id": "q3"}', r"queries\.jsonl:3: missing 'text' string for _id 'q3'"),
    ("qrels/test.tsv", 1, "q\td\ts", r"test\.tsv:1: expected the tab-separated header"),
    ("qrels/test.tsv", 3, "q2\td2", r"test\.tsv:3: expected 3 tab-separated columns .* got 2"),
    ("qrels/test.tsv", 3, "q2 d2 2", r"test\.tsv:3: expected 3 tab-separated columns .* got 1"),
    ("qrels/test.tsv", 3, "q2\td2\t1.5", r"test\.tsv:3: score '1\.5' is not an integer"),
    ("qrels/test.tsv", 3, "q9\td2\t1", r"test\.tsv:3: query-id 'q9' is not in queries\.jsonl"),
    ("qrels/test.tsv", 3, "q2\td9\t1", r"test\.tsv:3: corpus-id 'd9' is not in corpus\.jsonl"),
    ("qrels/test.tsv", 3, "q1\td1\t2", r"test\.tsv:3: duplicate judgement for \('q1', 'd1'\)"),
])
def test_bad_input_names_file_and_line(folder, name, line, content, message):
    _edit(folder / name, line, content)
    with pytest.raises(ValueError, match=message):
        load_beir(folder)


@pytest.mark.parametrize("name", ["corpus.jsonl", "queries.jsonl", "qrels/test.tsv"])
def test_missing_file(folder, name):
    (folder / name).unlink()
    with pytest.raises(ValueError, match=f"{name}: cannot read: No such file or directory"):
        load_beir(folder)


def test_write_checks_qrels_before_writing(tmp_path):
    with pytest.raises(ValueError, match="qrels name query 'q9', which is not among the queries"):
        write_beir(tmp_path, CORPUS, QUERIES, {"q9": {"d1": 1}})
    with pytest.raises(ValueError, match="name doc 'd9', which is not in the corpus"):
        write_beir(tmp_path, CORPUS, QUERIES, {"q1": {"d9": 1}})
    with pytest.raises(ValueError, match=r"must be an int, got 1\.0"):
        write_beir(tmp_path, CORPUS, QUERIES, {"q1": {"d1": 1.0}})
    assert not (tmp_path / "corpus.jsonl").exists()
