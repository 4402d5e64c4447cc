"""rag tune adapts the embedding model to a collection's own text (once by default; --adapt-embedder
again), with the real MiniLM, on 120 documents of the Python FAQ set committed in tests/data (no labels
are used)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rag.store import StoredChunk

ROOT = Path(__file__).resolve().parent.parent
FAQ = ROOT / "tests" / "data" / "python_faq_125.jsonl"


def chunk(n: int, text: str) -> StoredChunk:
    return StoredChunk(n, f"c{n}", f"doc{n}.txt", None, 0, len(text), text)


def test_ict_pairs_cut_the_question_out_of_its_chunk_and_skip_one_sentence_chunks():
    from rag.adapt import ict_pairs

    two = ("The lighthouse keeper lit the lamp at dusk every single day. "
           "She kept a log of every passing ship in a leather notebook.")
    one = "Only one sentence lives in this chunk and nothing else at all."
    chunks = [chunk(0, two), chunk(1, one)]
    pairs = ict_pairs(chunks, 10, seed=0, keep=0.0)
    assert len(pairs) == 2  # both sentences of the two-sentence chunk, none of the other
    for question, answer, chunk_id in pairs:
        assert question in two and question not in answer and answer.strip() and chunk_id == "c0"
    assert {p.question for p in pairs} == {"The lighthouse keeper lit the lamp at dusk every single day.",
                                           "She kept a log of every passing ship in a leather notebook."}
    assert ict_pairs(chunks, 10, seed=0, keep=0.0) == pairs  # seeded
    assert all(p.question in p.answer for p in ict_pairs(chunks, 10, seed=0, keep=1.0))  # kept whole


def faq_docs(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True)
    for i, line in enumerate(FAQ.read_text(encoding="utf-8").splitlines()[:n]):
        (folder / f"doc{i:04d}.txt").write_text(json.loads(line)["text"], encoding="utf-8")
    return folder


def rag(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAG_HOME": str(home), "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.run([sys.executable, "-m", "rag.cli", *args], capture_output=True, text=True, env=env,
                          timeout=900, check=False)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def copy_home(home: Path, tmp_path: Path) -> Path:
    """A copy of the adapted collection, for a test that changes it."""
    copy = tmp_path / "home"
    shutil.copytree(home / "faq", copy / "faq")
    return copy


@pytest.fixture(scope="module")
def adapted(tmp_path_factory):
    """A collection of 120 FAQ documents after a plain `rag tune --adapt-pairs 320` (which adapts)."""
    home = tmp_path_factory.mktemp("home")
    docs = faq_docs(home / "docs", 120)
    rag(home, "ingest", str(docs), "-c", "faq")
    proc = rag(home, "tune", "-c", "faq", "--adapt-pairs", "320", "--questions", "20", "--json")
    return home, json.loads(proc.stdout)


def test_adapting_re_embeds_the_collection_with_a_copy_kept_inside_it(adapted):
    from rag.components import embedding_model, make_embedder, open_collection
    from rag.settings import Settings

    home, out = adapted
    report = out["embedder"]
    assert report["kept"] and report["model"].startswith("all-MiniLM-L6-v2@adapted-")
    assert report["held_out_mrr"]["adapted"] > report["held_out_mrr"]["base"]
    assert report["pairs"] + report["held_out"] == 320 and report["chunks"] > 150
    folder = home / "faq" / f"embedder-{report['model'].split('@adapted-')[1]}"
    card = json.loads((folder / "ragvsft-embedder.json").read_text())
    assert card["name"] == report["model"] and card["base_model"] == "all-MiniLM-L6-v2"

    settings = Settings(home=home, collection="faq")
    assert embedding_model(settings) == str(folder)
    embedder = make_embedder(settings)
    collection = open_collection(settings, embedder)
    assert collection.model == embedder.name == report["model"]
    # the stored vectors are the adapted model's: a chunk's vector is its adapted embedding again,
    # and not the base model's
    from rag.chunking import indexed_text

    stored = collection.all_chunks()[0]
    vector = collection.vectors_by_vid([stored.vid])[0]
    text = indexed_text(stored.heading, stored.text)
    assert float(vector @ embedder.embed([text])[0]) > 0.999
    base = make_embedder(settings, model="all-MiniLM-L6-v2")
    assert float(vector @ base.embed([text])[0]) < 0.999
    collection.close()
    assert out["mode"] in ("dense", "bm25", "hybrid")  # tuned on the adapted vectors after

    listed = rag(home, "collections").stdout
    assert report["model"] in listed
    hits = json.loads(rag(home, "retrieve", "How do I copy a file?", "-c", "faq", "--json").stdout)
    assert hits  # queries are embedded by the adapted copy (a mismatch would be refused)


def test_new_files_in_an_adapted_collection_use_its_model_and_base_embedder_undoes_it(adapted, tmp_path):
    home, out = adapted
    home = copy_home(home, tmp_path)
    extra = faq_docs(tmp_path / "more", 125)
    for path in sorted(extra.iterdir())[:120]:
        path.unlink()
    rag(home, "ingest", str(extra), "-c", "faq")  # into the adapted collection: no model mismatch
    model = out["embedder"]["model"]
    assert model in rag(home, "collections").stdout

    kept = rag(home, "tune", "-c", "faq", "--questions", "20").stdout  # plain rag tune does not train again
    assert f"embedding model: {model}, not adapted: it already uses the adapted copy" in kept

    restored = json.loads(rag(home, "tune", "-c", "faq", "--base-embedder", "--questions", "20", "--json").stdout)
    assert restored["embedder"]["model"] == "all-MiniLM-L6-v2" and restored["embedder"]["chunks"] > 150
    assert not list((home / "faq").glob("embedder-*"))
    listed = rag(home, "collections").stdout
    assert "@adapted-" not in listed and "all-MiniLM-L6-v2" in listed
    again = json.loads(rag(home, "tune", "-c", "faq", "--base-embedder", "--questions", "20", "--json").stdout)
    assert again["embedder"]["chunks"] == 0  # nothing to undo
    plain = json.loads(rag(home, "tune", "-c", "faq", "--questions", "20", "--json").stdout)
    assert plain["embedder"] == {"model": "all-MiniLM-L6-v2", "chunks": 0, "skipped": (
        "the base model was chosen with --base-embedder (--adapt-embedder adapts)")}  # the choice is kept
    assert not list((home / "faq").glob("embedder-*"))


def test_a_collection_too_small_to_adapt_to_is_refused_in_one_line_and_left_as_it_was(tmp_path):
    home = tmp_path / "home"
    rag(home, "ingest", str(ROOT / "data" / "sample"), "-c", "sample")
    proc = rag(home, "tune", "-c", "sample", "--adapt-embedder", check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: collection 'sample' has only ") and "add documents first" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not list((home / "sample").glob("embedder-*"))
    assert "@adapted-" not in rag(home, "collections").stdout
    bad = rag(home, "tune", "-c", "sample", "--adapt-embedder", "--adapt-pairs", "0", check=False)
    assert bad.returncode == 2 and "--adapt-pairs must be positive, got 0" in bad.stderr


def test_plain_tune_reports_a_collection_too_small_to_adapt_to_and_tunes_it(tmp_path):
    home = tmp_path / "home"
    rag(home, "ingest", str(ROOT / "data" / "sample"), "-c", "sample")
    proc = rag(home, "tune", "-c", "sample")
    assert "Traceback" not in proc.stderr
    assert ("embedding model: all-MiniLM-L6-v2, not adapted: collection 'sample' has only 58 sentences to adapt the "
            "embedding model to (at least 200 are needed): add documents first") in proc.stdout
    assert "-> default mode dense" in proc.stdout  # tuned all the same
    assert not list((home / "sample").glob("embedder-*"))
    again = json.loads(rag(home, "tune", "-c", "sample", "--json").stdout)["embedder"]["skipped"]
    assert again.startswith("its last adaptation was refused (collection 'sample' has only 58 sentences")
    assert again.endswith("plain rag tune tries again once it holds 27 chunks (now 18), --adapt-embedder now")
    none = json.loads(rag(home, "tune", "-c", "sample", "--no-adapt-embedder", "--json").stdout)
    assert "embedder" not in none and none["mode"] == "dense"


def test_after_a_refusal_plain_tune_adapts_again_only_once_the_collection_has_grown_by_half(tmp_path, monkeypatch):
    import rag.adapt
    from ingest.pipeline import ingest
    from rag.adapt import OUTCOME, AdaptError, adapt_collection
    from rag.components import make_chunker, make_embedder, open_collection
    from rag.settings import Settings

    settings = Settings(home=tmp_path / "home", collection="faq")
    embedder = make_embedder(settings)
    docs = faq_docs(tmp_path / "docs", 100)
    first = sorted(docs.iterdir())[:60]
    collection = open_collection(settings, embedder, create=True)
    ingest(first, collection, embedder, make_chunker(settings, embedder))
    chunks = collection.count()[1]
    collection.close()
    steps = []
    monkeypatch.setattr(rag.adapt, "train", lambda model, pairs, **kw: steps.append(len(pairs)) or 0)
    said = []
    with pytest.raises(AdaptError, match="no better than all-MiniLM-L6-v2"):
        adapt_collection(settings, pairs=240, force=False, note=said.append)
    assert len(steps) == 1
    assert said == ["adapting the embedding model to 216 sentence/passage pairs of the collection; first, how well "
                    f"all-MiniLM-L6-v2 finds the passages of 24 held-out sentences among {chunks - 24} others",
                    "checking the adapted copy on the same held-out sentences"]  # what shows no progress bar
    skipped = adapt_collection(settings, pairs=240, force=False)  # nothing grew: no second training
    assert skipped["skipped"].startswith("its last adaptation was refused (the adapted embedding model ranked")
    assert len(steps) == 1
    collection = open_collection(settings, embedder)
    recorded = json.loads(collection.get_meta(OUTCOME))
    assert recorded["outcome"] == "not kept" and recorded["chunks"] == chunks
    ingest([docs], collection, embedder, make_chunker(settings, embedder))  # all 100 documents
    assert collection.count()[1] >= 1.5 * chunks
    collection.close()
    with pytest.raises(AdaptError):
        adapt_collection(settings, pairs=240, force=False)  # grown by half: it tries again
    assert len(steps) == 2


def test_an_adapted_model_that_ranks_no_better_is_not_kept(tmp_path, embedder, chunker, monkeypatch):
    """The held-out check: a training run that changes nothing (here: no steps at all) is refused,
    and neither the model folder nor the collection changes."""
    import rag.adapt
    from ingest.pipeline import ingest
    from rag.adapt import AdaptError, adapt
    from rag.embedding import resolve_model_path
    from rag.store import Collection

    collection = Collection.open(tmp_path / "faq", embedder.name, embedder.dim, create=True)
    ingest([faq_docs(tmp_path / "docs", 60)], collection, embedder, chunker)
    monkeypatch.setattr(rag.adapt, "train", lambda model, pairs, **kw: 0)
    called = []
    with pytest.raises(AdaptError, match="no better than all-MiniLM-L6-v2"):
        adapt(collection, resolve_model_path("all-MiniLM-L6-v2"), "all-MiniLM-L6-v2", device="cpu",
              dtype=embedder.dtype, reembed=called.append, pairs=240)
    assert not called and not list((tmp_path / "faq").glob("embedder-*"))
    assert collection.model == "all-MiniLM-L6-v2"


def test_a_missing_adapted_model_folder_is_a_one_line_error_naming_the_fix(adapted, tmp_path):
    home, out = adapted
    copy = copy_home(home, tmp_path)
    shutil.rmtree(next((copy / "faq").glob("embedder-*")))
    proc = rag(copy, "retrieve", "anything", "-c", "faq", check=False)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "is missing" in proc.stderr and "rag tune -c faq --base-embedder" in proc.stderr
    fixed = json.loads(rag(copy, "tune", "-c", "faq", "--base-embedder", "--questions", "20", "--json").stdout)
    assert fixed["embedder"]["model"] == "all-MiniLM-L6-v2" and fixed["embedder"]["chunks"] > 150  # the named fix works
    assert json.loads(rag(copy, "retrieve", "anything", "-c", "faq", "--json").stdout)


def test_an_adapted_model_the_collection_does_not_record_is_an_orphan_for_rag_check(adapted, tmp_path):
    from rag.store import Collection

    home, out = adapted
    copy = copy_home(home, tmp_path)
    (copy / "faq" / "embedder-0123456789ab.tmp").mkdir()  # a copy saved by an adaptation killed before it committed
    collection = Collection.open(copy / "faq")
    in_use = copy / "faq" / f"embedder-{out['embedder']['model'].split('@adapted-')[1]}"
    assert [p.name for p in collection.orphans()] == ["embedder-0123456789ab.tmp"] and in_use.is_dir()
    collection.close()
