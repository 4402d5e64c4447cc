"""`rag check`, damaged collections and orphan files: the collection guarantees of docs/RELIABILITY.md."""

import json
import os
import sqlite3
import subprocess
import sys

import numpy as np
import pytest

from rag.check import check_collection, repair_collection
from rag.store import DB_NAME, Collection, CollectionError, list_collections


def _ingest_two(tmp_path, collection, embedder, chunker):
    from ingest.pipeline import ingest

    for name, text in (("a.txt", "The lighthouse was first lit in 1887."), ("b.txt", "Marmots whistle at eagles.")):
        (tmp_path / name).write_text(text)
    ingest([tmp_path / "a.txt", tmp_path / "b.txt"], collection, embedder, chunker)


def test_a_healthy_collection_checks_ok(tmp_path, collection, embedder, chunker):
    _ingest_two(tmp_path, collection, embedder, chunker)
    report = check_collection(collection)
    assert report.ok and report.problems == [] and (report.files, report.chunks) == (2, 2)
    (tmp_path / "a.txt").write_text("changed")
    (tmp_path / "b.txt").unlink()
    notes = check_collection(collection).notes
    assert any("a.txt': the source changed" in n for n in notes) and any("b.txt': the source is gone" in n for n in notes)


def test_check_finds_and_repair_fixes_a_broken_index_and_orphans(tmp_path, collection, embedder, chunker):
    _ingest_two(tmp_path, collection, embedder, chunker)
    index_file = collection.folder / f"index-{collection.generation}.faiss"
    index_file.write_bytes(b"not a faiss index")
    (collection.folder / "index-7.faiss.tmp").write_bytes(b"half-written")  # a kill during an index save
    (collection.folder / "index-9.faiss").write_bytes(b"a generation that never committed")
    (collection.folder / "bm25-9").mkdir()  # its BM25 folder
    (collection.folder / "bm25-8.tmp").mkdir()  # a kill while a BM25 index was being saved
    (collection.folder / "bm25-8.tmp" / "vids.npy").write_bytes(b"half")
    collection.db.execute("DELETE FROM files WHERE path LIKE '%b.txt'")  # its chunk is now an orphan row
    problems = check_collection(collection).problems
    assert any("is unreadable" in p for p in problems)
    assert any("1 chunk(s) belong to no file" in p for p in problems)
    assert sum("orphan file" in p for p in problems) == 4
    done = repair_collection(collection)
    assert any("rebuilt the index" in line for line in done)
    assert any("removed 1 chunk(s) that belonged to no file" in line for line in done)
    again = check_collection(Collection.open(collection.folder))
    assert again.ok, again.problems
    assert sorted(p.name for p in collection.folder.glob("index-*")) == [f"index-{collection.generation}.faiss"]
    assert sorted(p.name for p in collection.folder.glob("bm25-*")) == [f"bm25-{collection.generation}"]


def test_check_finds_an_index_that_disagrees_with_the_store(tmp_path, collection, embedder, chunker):
    _ingest_two(tmp_path, collection, embedder, chunker)
    collection.db.execute("UPDATE chunks SET text = 'tampered' WHERE path LIKE '%a.txt'")
    from rag.index import build_index

    index = build_index("flat", embedder.dim, np.array([999], dtype=np.int64),
                        np.ones((1, embedder.dim), dtype=np.float32) / embedder.dim ** 0.5)
    index.save(collection.folder / f"index-{collection.generation}.faiss")
    problems = check_collection(collection).problems
    assert "index holds 1 vectors but the store 2 chunks" in problems
    assert any("2 chunk(s) not in the index, 1 index id(s) with no chunk" in p for p in problems)
    assert any("do not match their id" in p or "does not match their id" in p for p in problems)


def test_check_verifies_the_bm25_index_and_repair_saves_a_missing_one(tmp_path, collection, embedder, chunker):
    import shutil

    from rag.bm25 import BM25Index

    _ingest_two(tmp_path, collection, embedder, chunker)
    folder = collection.folder / f"bm25-{collection.generation}"
    BM25Index.build([1], ["only one of the two chunks"]).save(folder)  # replaced by a wrong one
    assert any("BM25 index bm25-1 scores 1 chunk(s) but the store holds 2" in p
               for p in check_collection(collection).problems)
    (folder / "vids.npy").write_bytes(b"not numpy")
    assert any("BM25 index bm25-1 is unreadable" in p for p in check_collection(collection).problems)
    shutil.rmtree(folder)  # as in a collection written before BM25 indexes were saved: a note, not a problem
    report = check_collection(collection)
    assert report.ok and any("no saved BM25 index bm25-1" in n for n in report.notes)
    repair_collection(collection)
    report = check_collection(Collection.open(collection.folder))
    assert report.ok and not any("BM25" in n for n in report.notes)
    assert len(BM25Index.load(collection.folder / f"bm25-{collection.generation}")) == 2


@pytest.mark.parametrize("content", [b"", b"garbage, not SQLite" * 100])
def test_a_damaged_collection_is_listed_and_never_hides_the_others(tmp_path, embedder, content):
    Collection.open(tmp_path / "good", embedder.name, embedder.dim, create=True).close()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / DB_NAME).write_bytes(content)  # what a kill right after creating the file left
    infos = {info.name: info for info in list_collections(tmp_path)}
    assert infos["good"].damaged == "" and infos["good"].model == embedder.name
    assert "is damaged" in infos["broken"].damaged
    with pytest.raises(CollectionError, match="collection 'broken' is damaged"):
        Collection.open(tmp_path / "broken")
    env = {**os.environ, "RAG_HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "rag.cli", "collections"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr
    assert "broken               DAMAGED: collection 'broken' is damaged" in proc.stdout and "good" in proc.stdout
    listed = json.loads(subprocess.run([sys.executable, "-m", "rag.cli", "collections", "--json"],
                                       capture_output=True, text=True, env=env).stdout)
    assert [(c["name"], bool(c["damaged"])) for c in listed] == [("broken", True), ("good", False)]


def test_a_collection_is_created_whole(tmp_path, embedder, monkeypatch):
    """A kill during creation leaves no collection database at all, never an empty one."""
    import rag.store

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # stands for SIGKILL between writing the schema and the metadata

    real_connect = sqlite3.connect
    calls = []

    def connect(path, *args, **kwargs):
        db = real_connect(path, *args, **kwargs)
        calls.append(str(path))
        if ".tmp-" in str(path):
            class Dying:
                def __getattr__(self, name):
                    return getattr(db, name)

                def executemany(self, *a, **k):
                    killed()
            return Dying()
        return db

    monkeypatch.setattr(rag.store.sqlite3, "connect", connect)
    with pytest.raises(KeyboardInterrupt):
        Collection.open(tmp_path / "new", embedder.name, embedder.dim, create=True)
    monkeypatch.undo()
    assert not (tmp_path / "new" / DB_NAME).exists()
    assert list_collections(tmp_path) == []
    coll = Collection.open(tmp_path / "new", embedder.name, embedder.dim, create=True)
    assert coll.model == embedder.name and coll.generation == 0


def test_rag_check_cli(tmp_path, collection, embedder, chunker):
    _ingest_two(tmp_path, collection, embedder, chunker)
    env = {**os.environ, "RAG_HOME": str(collection.folder.parent)}
    ok = subprocess.run([sys.executable, "-m", "rag.cli", "check", "-c", collection.name, "--json"],
                        capture_output=True, text=True, env=env)
    assert ok.returncode == 0 and json.loads(ok.stdout)["ok"] is True
    (collection.folder / f"index-{collection.generation}.faiss").unlink()
    bad = subprocess.run([sys.executable, "-m", "rag.cli", "check", "-c", collection.name],
                         capture_output=True, text=True, env=env)
    assert bad.returncode == 1 and "problem: index file" in bad.stdout and "is missing" in bad.stdout
    fixed = subprocess.run([sys.executable, "-m", "rag.cli", "check", "-c", collection.name, "--repair", "--json"],
                           capture_output=True, text=True, env=env)
    out = json.loads(fixed.stdout)
    assert fixed.returncode == 0 and out["ok"] and any("rebuilt the index" in r for r in out["repaired"])
