"""`rag ingest --engine ray` on a real local Ray (2 CPUs) with the real MiniLM: the same collection as
the local engine, the same incremental decisions, and Ray's faults survived without a half commit."""

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import ray  # not skipped when missing: `make dev` installs the .[ray] extra

from conftest import SAMPLE
from ingest.pipeline import ingest
from ingest.ray_engine import EmbedActor, RayOptions, ingest_ray
from rag.retriever import Retriever
from rag.store import STAGING_NAME, Collection, Writer

# The test's own actor class (below) is defined here, where Ray's workers cannot import it by name.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")  # Ray's own settings
SMALL_BATCHES = RayOptions(batch_size=8)  # several batches per run, so an actor can die between two


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def docs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ray-docs") / "docs"
    shutil.copytree(SAMPLE, folder)
    return folder


@pytest.fixture(scope="module")
def local_collection(docs, tmp_path_factory, embedder, chunker):
    coll = Collection.open(tmp_path_factory.mktemp("local") / "local", embedder.name, embedder.dim, create=True)
    assert ingest([docs], coll, embedder, chunker).new == 4
    return coll


def _open(tmp_path, embedder, name="ray"):
    return Collection.open(tmp_path / name, embedder.name, embedder.dim, create=True)


def _one_file_collection(tmp_path, embedder, chunker, name):
    """The sample corpus copied to docs/, and a collection under home/ holding one of its files."""
    docs = tmp_path / "docs"
    shutil.copytree(SAMPLE, docs)
    home = tmp_path / "home"
    coll = _open(home, embedder, name)
    ingest([docs / "korvik_lighthouse.md"], coll, embedder, chunker)
    return docs, home, coll


def _state(coll):
    """What a run that did not commit must leave exactly as it was."""
    return coll.generation, coll.count(), coll.file_hashes(), sorted(_stored(coll))


def _stored(coll):
    """chunk id -> (source, page, start, end, heading, text, vector)."""
    chunks = coll.all_chunks()
    vectors = coll.vectors_by_vid([c.vid for c in chunks])
    return {c.id: (c.source, c.page, c.start, c.end, c.heading, c.text, v) for c, v in zip(chunks, vectors)}


def assert_same_collection(ours, theirs):
    a, b = _stored(ours), _stored(theirs)
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key][:6] == b[key][:6]
        np.testing.assert_allclose(a[key][6], b[key][6], atol=1e-5)
    assert ours.file_hashes() == theirs.file_hashes()
    assert ours.index.ntotal == ours.count()[1] == len(a)  # no duplicate, no lost chunk


def test_same_collection_and_answers_as_the_local_engine(docs, local_collection, tmp_path, embedder, chunker, qa):
    coll = _open(tmp_path, embedder)
    report = ingest_ray([docs], coll, embedder, chunker, options=SMALL_BATCHES)
    assert (report.new, report.changed, report.unchanged, report.failed) == (4, 0, 0, 0)
    assert report.chunks_added == local_collection.count()[1]
    assert set(report.as_dict()) == set(ingest([docs], local_collection, embedder, chunker).as_dict())
    assert_same_collection(coll, local_collection)
    assert not (coll.folder / STAGING_NAME).exists()

    ours, theirs = Retriever(coll, embedder), Retriever(local_collection, embedder)
    for row in qa[:8]:
        for mode in ("dense", "hybrid"):
            assert ([h.chunk_id for h in ours.search(row["question"], k=3, mode=mode)]
                    == [h.chunk_id for h in theirs.search(row["question"], k=3, mode=mode)])

    again = ingest_ray([docs], coll, embedder, chunker)  # nothing new: Ray is not even asked
    assert (again.new, again.changed, again.unchanged, again.chunks_added, again.chunks_removed) == (0, 0, 4, 0, 0)


def test_changed_file_replaced_and_bad_files_reported(tmp_path, embedder, chunker):
    docs = tmp_path / "docs"
    shutil.copytree(SAMPLE, docs)
    coll = _open(tmp_path, embedder)
    ingest([docs], coll, embedder, chunker)  # a collection the local engine wrote, continued on Ray
    tea = docs / "green_tea.txt"
    old_tea = {c.id for c in coll.chunks_of(str(tea))}
    tea.write_text("Green tea is fixed by steaming. Matcha is ground into a fine powder and whisked.\n")
    (docs / "empty.txt").write_bytes(b"")
    (docs / "binary.txt").write_bytes(b"\x00\x01\x02" * 300)
    (docs / "corrupt.pdf").write_bytes(b"%PDF-1.7 garbage")
    (docs / "fine.md").write_text("The Tidy T3 dust bin holds 0.4 litres.")

    report = ingest_ray([docs], coll, embedder, chunker, options=SMALL_BATCHES)
    assert (report.new, report.changed, report.unchanged, report.failed) == (1, 1, 3, 3)
    assert (report.chunks_added, report.chunks_removed) == (2, len(old_tea))
    assert all("\n" not in e for e in report.errors)
    joined = "\n".join(report.errors)
    for needle in ("empty.txt: empty file", "binary.txt: binary data", "corrupt.pdf: not a readable PDF"):
        assert needle in joined
    assert [c.text for c in coll.chunks_of(str(tea))] == [tea.read_text().strip()]
    assert not old_tea & {c.id for c in coll.all_chunks()}  # no stale chunk
    assert coll.chunks_of(str(docs / "fine.md"))

    local = _open(tmp_path, embedder, "local")  # the local engine on the same files agrees
    ingest([docs], local, embedder, chunker)
    assert_same_collection(coll, local)


class DiesOnce(EmbedActor):
    """An embedding actor whose process exits in the middle of its second batch, once in the whole
    run (the marker file says whether it already did): Ray must restart it and redo that batch."""

    marker = ""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.batches = 0

    def __call__(self, batch):
        self.batches += 1
        if self.batches == 2:
            try:
                os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                pass
            else:
                os._exit(1)
        return super().__call__(batch)


def test_a_killed_embedding_actor_is_retried_without_duplicates(docs, local_collection, tmp_path, embedder,
                                                                chunker):
    DiesOnce.marker = str(tmp_path / "died")
    coll = _open(tmp_path, embedder)
    report = ingest_ray([docs], coll, embedder, chunker, options=SMALL_BATCHES, embed_actor=DiesOnce)
    assert os.path.exists(DiesOnce.marker)  # an actor really died
    assert (report.new, report.failed) == (4, 0)
    assert_same_collection(coll, local_collection)


def test_a_driver_killed_before_the_commit_leaves_the_collection_and_the_next_run_cleans_up(
        tmp_path, embedder, chunker, monkeypatch, capsys):
    docs, home, coll = _one_file_collection(tmp_path, embedder, chunker, "r")
    before = _state(coll)

    def killed(self):
        raise KeyboardInterrupt  # the driver stops between the shards and the commit
    monkeypatch.setattr(Writer, "commit", killed)
    with pytest.raises(KeyboardInterrupt):
        ingest_ray([docs], coll, embedder, chunker)
    monkeypatch.undo()
    staging = coll.folder / STAGING_NAME
    assert list(staging.glob("*.parquet"))  # the shards a next run must not take as current
    coll.refresh()
    assert _state(coll) == before

    tea = docs / "green_tea.txt"
    tea.write_text("Oolong is partly oxidised before it is dried.\n")  # the staged shards hold its old text
    from rag.cli import main

    monkeypatch.setenv("RAG_HOME", str(home))
    assert main(["ingest", str(docs), "-c", "r", "--engine", "ray", "--embed-actors", "1", "--batch-size", "8",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["files"] == {"new": 3, "changed": 0, "unchanged": 1, "reparsed": 0, "failed": 0, "pruned": 0}
    assert not staging.exists()
    coll.refresh()
    assert [c.text for c in coll.chunks_of(str(tea))] == [tea.read_text().strip()]
    assert coll.index.ntotal == coll.count()[1] == len(_stored(coll))


def test_a_driver_sigkilled_between_the_shards_and_the_commit_leaves_the_collection(tmp_path, embedder, chunker):
    """A real SIGKILL of the driver process (a `rag ingest --engine ray` on this test's Ray cluster),
    at the moment the shards are written and the commit is about to start."""
    import signal
    import subprocess

    docs, home, coll = _one_file_collection(tmp_path, embedder, chunker, "k")
    before = _state(coll)
    script = ("import os, signal, sys\n"
              "from rag.store import Writer\n"
              "Writer.commit = lambda self: os.kill(os.getpid(), signal.SIGKILL)\n"
              "from rag.cli import main\n"
              "sys.exit(main(sys.argv[1:]))\n")
    args = ["ingest", str(docs), "-c", "k", "--engine", "ray", "--address", ray.get_runtime_context().gcs_address,
            "--embed-actors", "1", "--batch-size", "8"]
    env = {**os.environ, "RAG_HOME": str(home), "RAG_EMBEDDING_DTYPE": embedder.dtype}
    killed = subprocess.run([sys.executable, "-c", script, *args], env=env, capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert list((coll.folder / STAGING_NAME).glob("*.parquet"))  # it died with its shards written
    coll.refresh()
    assert _state(coll) == before
    again = subprocess.run([sys.executable, "-m", "rag.cli", *args, "--json"], env=env, capture_output=True,
                           text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["files"]["new"] == 3 and not (coll.folder / STAGING_NAME).exists()
    coll.refresh()
    assert coll.index.ntotal == coll.count()[1] == len(_stored(coll))


def test_without_ray_the_engine_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    from rag.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if it were not installed
    monkeypatch.delitem(sys.modules, "ingest.ray_engine")
    monkeypatch.setenv("RAG_HOME", str(tmp_path))
    assert main(["ingest", str(SAMPLE), "-c", "r", "--engine", "ray"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install -e '.[ray]'" in err
    assert not (tmp_path / "r").exists()


def test_ray_flags_need_the_ray_engine_and_valid_values(tmp_path, monkeypatch, capsys):
    from rag.cli import main

    monkeypatch.setenv("RAG_HOME", str(tmp_path))
    assert main(["ingest", str(SAMPLE), "-c", "r", "--embed-actors", "2", "--address", "auto"]) == 2
    assert "--address, --embed-actors only apply with --engine ray" in capsys.readouterr().err
    assert main(["ingest", str(SAMPLE), "-c", "r", "--engine", "ray", "--embed-actors", "0"]) == 2
    assert "embed_actors must be at least 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
    # Two actors would hold both CPUs of the test's Ray and starve the parse tasks: refused, not hung.
    assert main(["ingest", str(SAMPLE), "-c", "r", "--engine", "ray", "--embed-actors", "2"]) == 2
    assert "use --embed-actors 1 or less" in capsys.readouterr().err


def test_serve_passes_tensor_and_pipeline_parallel_sizes_to_vllm():
    """Serving scales out in vLLM itself (docs/SCALE.md): the sizes reach its command line."""
    from rag.serving import ServeOptions, VLLMInstall, build_command

    install = VLLMInstall(Path("/venv/bin/python"), "0.32.0", cpu=False)
    command = build_command(install, ServeOptions("m", "m", tensor_parallel_size=4, pipeline_parallel_size=2,
                                                  extra_args=["--distributed-executor-backend", "ray"]))
    joined = " ".join(command)
    assert "--tensor-parallel-size 4" in joined and "--pipeline-parallel-size 2" in joined
    assert command[-2:] == ["--distributed-executor-backend", "ray"]
    assert "--pipeline-parallel-size" not in build_command(install, ServeOptions("m", "m"))
    with pytest.raises(ValueError, match="pipeline_parallel_size must be at least 1, got 0"):
        ServeOptions("m", "m", pipeline_parallel_size=0)
