"""The `rag` command as a user runs it: a real process, real files, JSON on stdout."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import SAMPLE


def rag(*args, home, cwd=None, check=True):
    env = {**os.environ, "RAG_HOME": str(home), "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.run([sys.executable, "-m", "rag.cli", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    home = tmp_path_factory.mktemp("cli-home")
    docs = home / "docs"
    shutil.copytree(SAMPLE, docs)
    out = json.loads(rag("ingest", str(docs), "--collection", "sample", "--json", home=home).stdout)
    assert out["files"]["new"] == 4 and out["chunks_added"] > 0
    return home


def test_ingest_json_summary_and_rerun(home):
    out = json.loads(rag("ingest", str(home / "docs"), "-c", "sample", "--json", home=home).stdout)
    assert set(out) >= {"files", "chunks_added", "chunks_removed", "seconds", "errors"}
    assert out["files"] == {"new": 0, "changed": 0, "unchanged": 4, "reparsed": 0, "failed": 0, "pruned": 0}
    assert out["chunks_added"] == 0


def test_python_m_ingest_is_rag_ingest(home):
    env = {**os.environ, "RAG_HOME": str(home)}
    proc = subprocess.run([sys.executable, "-m", "ingest", str(home / "docs"), "-c", "sample", "--json"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["files"]["unchanged"] == 4


def test_retrieve_json_and_queries_file(home, tmp_path):
    out = json.loads(rag("retrieve", "How many steps lead to the gallery?", "-c", "sample", "--json", "-k", "2",
                         home=home).stdout)
    assert len(out["results"]) == 2
    assert out["results"][0]["source"].endswith("korvik_lighthouse.md")
    assert set(out["results"][0]) == {"source", "page", "heading", "score", "text"}
    assert out["results"][0]["heading"].startswith("The Korvik Island Lighthouse > ")
    queries = tmp_path / "q.jsonl"
    queries.write_text('{"question": "How long do marmots hibernate?"}\nWhich plant does tea come from?\n')
    lines = rag("retrieve", "--queries", str(queries), "-c", "sample", "--retrieval", "bm25", home=home).stdout.splitlines()
    assert [json.loads(l)["question"] for l in lines] == ["How long do marmots hibernate?", "Which plant does tea come from?"]
    assert json.loads(lines[0])["results"][0]["page"] == 5


def test_collections_lists_counts(home):
    infos = json.loads(rag("collections", "--json", home=home).stdout)
    assert [(i["name"], i["files"], i["index_type"], i["model"]) for i in infos] == [
        ("sample", 4, "flat", "all-MiniLM-L6-v2")
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("ask", "  ", "-c", "sample"), "error: question is empty"),
        (("retrieve", "tea", "-c", "nope"), "error: collection 'nope' does not exist"),
        (("retrieve", "tea", "-c", "sample", "--k", "0"), "error: k must be positive, got 0"),
        (("ask", "tea?", "-c", "sample", "--backend", "server", "--base-url", "http://127.0.0.1:9/v1", "--model", "m"),
         "error: cannot reach the model server at http://127.0.0.1:9/v1"),
        (("ask", "tea?", "-c", "sample", "--mode", "lora+rag"), "error: mode lora+rag needs --adapter NAME"),
        (("retrieve", "-c", "sample", "--queries", "/nonexistent/q.txt"), "error: /nonexistent/q.txt: cannot read"),
        (("eval", "--qa", "data/sample/qa.jsonl", "--out", "/tmp/never", "--arms", "rag,best"),
         "error: arms must be among base, rag, lora, lora+rag; got rag, best"),
    ],
)
def test_errors_are_one_line(home, args, message):
    proc = rag(*args, home=home, check=False)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]  # exactly one line
    assert proc.stderr.startswith(message)


def test_ingest_exit_code_only_when_nothing_landed(home, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    good = tmp_path / "good.txt"
    good.write_text("Korvik ferries run from May to September.")
    bad_only = rag("ingest", str(empty), "-c", "mixed", "--json", home=home, check=False)
    assert bad_only.returncode == 1
    assert json.loads(bad_only.stdout)["errors"] == [f"{empty}: empty file"]
    mixed = rag("ingest", str(empty), str(good), "-c", "mixed", "--json", home=home, check=False)
    assert mixed.returncode == 0
    strict = rag("ingest", str(empty), str(good), "-c", "mixed", "--strict", home=home, check=False)
    assert strict.returncode == 1 and "empty.txt: empty file" in strict.stderr


@pytest.mark.slow
def test_ask_answers_with_the_fact_and_cites_its_file(tmp_path):
    """A new user's first path, on the sample corpus with the real SmolLM2: ingest, ingest again, ask."""
    docs = tmp_path / "docs"
    shutil.copytree(SAMPLE, docs)
    first = json.loads(rag("ingest", str(docs), "-c", "notes", "--json", home=tmp_path).stdout)
    assert first["files"]["new"] == 4
    again = json.loads(rag("ingest", str(docs), "-c", "notes", "--json", home=tmp_path).stdout)
    assert again["files"]["unchanged"] == 4 and again["chunks_added"] == 0
    out = json.loads(rag("ask", "When was the Korvik Island Lighthouse first lit?", "-c", "notes", "--json",
                         home=tmp_path).stdout)
    assert "1887" in out["answer"] and out["kind"] == "answer"
    cited = {n for c in out["citations"] if c["supported"] for n in c["passages"]}
    assert cited and all(out["sources"][n - 1]["source"].endswith("korvik_lighthouse.md") for n in cited)


def test_user_errors_are_one_line_and_bugs_keep_their_traceback(tmp_path, monkeypatch, capsys):
    import rag.cli
    from rag.errors import ConfigError, RagError

    monkeypatch.setenv("RAG_HOME", str(tmp_path))
    assert rag.cli.main(["retrieve", "anything", "-c", "bad name"]) == 2  # a settings ValueError is a RagError
    assert capsys.readouterr().err.strip().startswith("error: collection name 'bad name' is invalid")
    assert issubclass(ConfigError, ValueError) and issubclass(ConfigError, RagError)

    def buggy(args):
        raise KeyError("a bug in our code")

    parser = rag.cli.build_parser
    monkeypatch.setattr(rag.cli, "build_parser", lambda: _with_func(parser(), "collections", buggy))
    with pytest.raises(KeyError, match="a bug in our code"):  # not swallowed into one line
        rag.cli.main(["collections"])
    with pytest.raises(RagError):  # --debug shows the traceback of user errors too
        rag.cli.main(["--debug", "retrieve", "anything", "-c", "bad name"])


def _with_func(parser, command, func):
    for action in parser._subparsers._group_actions:
        action.choices[command].set_defaults(func=func)
    return parser


def test_every_module_error_is_a_rag_error():
    from rag.adapters import AdapterError
    from rag.cli import UserError
    from rag.errors import RagError
    from rag.finetune import FinetuneError
    from rag.finetune_data import DataError
    from rag.generator import GenerationError
    from rag.loading import LoadError
    from rag.serving import ServeError
    from rag.store import CollectionError

    for error in (AdapterError, UserError, FinetuneError, DataError, GenerationError, LoadError, ServeError,
                  CollectionError):
        assert issubclass(error, RagError), error


def test_renamed_flags_still_work_with_a_deprecation_line(home, tmp_path):
    old = rag("retrieve", "How long do marmots hibernate?", "-c", "sample", "--mode", "bm25", "--json", home=home)
    assert "warning: --mode is deprecated here and will be removed; use --retrieval" in old.stderr
    new = rag("retrieve", "How long do marmots hibernate?", "-c", "sample", "--retrieval", "bm25", "--json", home=home)
    assert json.loads(old.stdout) == json.loads(new.stdout)


# What a command that loads no model must not import; rag.finetune imports torch, transformers and
# peft inside train() only.
HEAVY = ("torch", "transformers", "sentence_transformers", "peft", "faiss", "bm25s", "ftfy", "orjson", "wcwidth",
         "pypdf", "pypdfium2", "pdfminer")


def heavy_imports(code: str, home) -> set[str]:
    """The HEAVY modules a fresh interpreter holds after running `code`."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    env = {**os.environ, "RAG_HOME": str(home)}
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return set(json.loads(proc.stdout.splitlines()[-1]))


@pytest.mark.parametrize("code", ["import rag.finetune", "from rag.finetune_data import read_dataset",
                                  "from rag.cli import build_parser; build_parser()"])
def test_the_parser_and_the_finetune_modules_import_nothing_heavy(code, tmp_path):
    assert heavy_imports(code, tmp_path) == set()


def test_rag_collections_loads_no_model(home):
    # faiss only: listing opens each collection's index, so that a damaged one is listed as such.
    code = "from rag.cli import main\nassert main(['collections']) == 0"
    assert heavy_imports(code, home) <= {"faiss"}
