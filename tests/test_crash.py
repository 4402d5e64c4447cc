"""SIGKILL during `rag ingest` at seeded random moments: the collection always checks out, and a
re-run completes it with no duplicate or stale chunk (docs/RELIABILITY.md)."""

import os
import random
import signal
import subprocess
import sys
import threading
import time

import pytest

from rag.check import check_collection
from rag.store import DB_NAME, Collection

TRIALS = 10


def _write_corpus(folder, rng: random.Random, version: int) -> None:
    words = "lamp gallery ferry marmot tea glacier harbour beacon keeper storm lens oil".split()
    for n in range(40):
        if version and rng.random() > 0.3:
            continue  # each later version changes about a third of the files
        body = " ".join(rng.choice(words) for _ in range(rng.randint(20, 400)))
        (folder / f"doc{n:02d}.txt").write_text(f"Document {n}, version {version}. {body}.\n")


def _start_ingest(corpus, home) -> tuple[subprocess.Popen, threading.Event]:
    env = {**os.environ, "RAG_HOME": str(home), "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.Popen([sys.executable, "-m", "rag.cli", "ingest", str(corpus), "-c", "crash", "--prune"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    started = threading.Event()

    def watch() -> None:  # the progress bar's first output means files are being ingested
        for line in iter(lambda: proc.stderr.read(64), b""):
            if b"ingest" in line:
                started.set()
        started.set()

    threading.Thread(target=watch, daemon=True).start()
    return proc, started


@pytest.mark.slow
def test_sigkill_during_ingest_never_breaks_the_collection(tmp_path, embedder, chunker):
    from ingest.pipeline import ingest

    rng = random.Random(20261125)
    corpus, home = tmp_path / "corpus", tmp_path / "home"
    corpus.mkdir()
    outcomes = []
    for trial in range(TRIALS):
        _write_corpus(corpus, rng, trial)
        proc, started = _start_ingest(corpus, home)
        if trial % 3 == 0:  # from the process start: loading, creating the collection, the first files
            time.sleep(rng.uniform(0.5, 6.0))
        else:  # once ingest runs: embedding, the commits, the index saves
            assert started.wait(timeout=120)
            time.sleep(rng.uniform(0.0, 2.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        outcomes.append(proc.returncode)
        if not (home / "crash" / DB_NAME).exists():
            continue  # killed before the collection was created: nothing to check
        coll = Collection.open(home / "crash")
        report = check_collection(coll, sources=False)
        assert report.ok, f"trial {trial}: {report.problems}"
        coll.close()
    assert outcomes.count(-signal.SIGKILL) >= TRIALS // 2  # most trials really were killed mid-run

    coll = Collection.open(home / "crash", embedder.name, embedder.dim, create=True)
    final = ingest([corpus], coll, embedder, chunker, prune=True)
    assert final.failed == 0
    assert check_collection(coll).ok and check_collection(coll).notes == []  # every file is current
    ids = [row[0] for row in coll.db.execute("SELECT id FROM chunks")]
    assert len(ids) == len(set(ids)) == coll.index.ntotal
    assert coll.count()[0] == 40
    fresh = Collection.open(tmp_path / "fresh", embedder.name, embedder.dim, create=True)
    ingest([corpus], fresh, embedder, chunker)
    assert sorted(ids) == sorted(row[0] for row in fresh.db.execute("SELECT id FROM chunks"))
