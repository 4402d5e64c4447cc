import numpy as np
import pytest

from rag.bm25 import BM25Index
from rag.chunking import Chunk
from rag.store import Collection, CollectionError


def _chunks(path: str, n: int, dim: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    chunks = [Chunk(f"{path}-{seed}-{i}", path, None, i * 10, i * 10 + 9, f"text {i} of {path}") for i in range(n)]
    return chunks, vectors


def test_commit_moves_generation_and_keeps_index_and_sqlite_in_step(collection, embedder):
    with collection.writer() as w:
        w.replace_file("/a.txt", "h1", 10, *_chunks("/a.txt", 5, embedder.dim))
        assert w.commit() == (5, 0)
        w.replace_file("/a.txt", "h2", 10, *_chunks("/a.txt", 3, embedder.dim, seed=1))
        assert w.commit() == (3, 5)
    assert collection.generation == 2
    assert sorted(p.name for p in collection.folder.glob("index-*.faiss")) == ["index-2.faiss"]
    reopened = Collection.open(collection.folder)
    assert reopened.generation == 2 and reopened.index.ntotal == 3 == reopened.count()[1]


def test_failed_commit_leaves_collection_as_it_was(collection, embedder, monkeypatch):
    with collection.writer() as w:
        w.replace_file("/a.txt", "h1", 10, *_chunks("/a.txt", 4, embedder.dim))
        w.commit()
        w.replace_file("/b.txt", "h2", 10, *_chunks("/b.txt", 4, embedder.dim, seed=2))
        w.remove_file("/a.txt")
        import rag.index

        def crash(self, path):  # the disk fills up while the new index is written
            raise OSError("No space left on device")

        monkeypatch.setattr(rag.index._FaissIndex, "save", crash)
        with pytest.raises(OSError, match="No space left"):
            w.commit()
    monkeypatch.undo()
    again = Collection.open(collection.folder)
    assert again.generation == 1
    assert again.file_hashes() == {"/a.txt": "h1"}
    assert again.index.ntotal == 4 == again.count()[1]
    assert not list(collection.folder.glob("index-2.faiss*"))


def test_model_mismatch_and_missing_collection(collection, tmp_path):
    with pytest.raises(CollectionError, match=r"built with embedding model 'all-MiniLM-L6-v2', not 'other-model'"):
        Collection.open(collection.folder, model="other-model", dim=8)
    with pytest.raises(CollectionError, match=r"collection 'nope' does not exist"):
        Collection.open(tmp_path / "nope")


def test_second_writer_is_refused(collection):
    with collection.writer():
        other = Collection.open(collection.folder)
        with pytest.raises(CollectionError, match="is being written by another process"):
            with other.writer():
                pass


def test_readers_see_new_generation(collection, embedder):
    reader = Collection.open(collection.folder)
    with collection.writer() as w:
        w.replace_file("/a.txt", "h1", 10, *_chunks("/a.txt", 2, embedder.dim))
        w.commit()
    assert reader.refresh()
    _, ids = reader.search(np.ones((1, embedder.dim), dtype=np.float32) / embedder.dim**0.5, 5)
    assert reader.generation == 1 and sorted(i for i in ids[0] if i >= 0) == [1, 2]


def test_auto_index_switches_to_ivf_past_threshold(collection, embedder):
    with collection.writer(index_type="auto", exact_threshold=100) as w:
        w.replace_file("/small.txt", "h", 1, *_chunks("/small.txt", 50, embedder.dim))
        w.commit()
        assert collection.index_type == "flat"
        w.replace_file("/big.txt", "h", 1, *_chunks("/big.txt", 200, embedder.dim, seed=3))
        w.commit()
    assert collection.index_type == "ivf" and collection.index.kind == "ivf"
    assert collection.index.ntotal == 250


def _texts(path: str, texts: list[str], dim: int, seed: int = 0):
    chunks, vectors = _chunks(path, len(texts), dim, seed)
    return [Chunk(c.id, c.source, c.page, c.start, c.end, text) for c, text in zip(chunks, texts)], vectors


def test_each_generation_saves_its_bm25_index_and_drops_the_old_one(collection, embedder):
    with collection.writer() as w:
        w.replace_file("/a.txt", "h1", 10, *_texts("/a.txt", ["zanzibarite ore", "quartz vein"], embedder.dim))
        w.commit()
        w.replace_file("/b.txt", "h2", 10, *_texts("/b.txt", ["pyrite cube"], embedder.dim, seed=1))
        w.commit()
    names = sorted(p.name for p in collection.folder.iterdir() if p.name.startswith(("index-", "bm25-")))
    assert names == ["bm25-2", "index-2.faiss"]
    assert collection.orphans() == []
    bm25 = BM25Index.load(collection.folder / "bm25-2")
    assert sorted(bm25.vids) == [1, 2, 3] and bm25.search("pyrite", 5)[0][0] == 3


BM25_READER = """
import json, sys
import rag.bm25
from rag.store import Collection

def refuse(*args, **kwargs):
    raise AssertionError("the BM25 index was rebuilt instead of loaded")

rag.bm25.BM25Index.build = refuse
coll = Collection.open(sys.argv[1])
bm25 = coll.load_bm25()
print(json.dumps({"generation": coll.generation, **{term: [v for v, _ in bm25.search(term, 10)] for term in sys.argv[2:]}}))
"""


def _read_bm25_in_new_process(folder, *terms) -> dict:
    import json
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", BM25_READER, str(folder), *terms], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_bm25_persists_across_processes_and_generations_without_stale_terms(collection, embedder):
    from rag.retriever import Retriever

    with collection.writer() as w:
        w.replace_file("/a.txt", "h1", 10, *_texts("/a.txt", ["zanzibarite ore", "quartz vein"], embedder.dim))
        w.replace_file("/b.txt", "h2", 10, *_texts("/b.txt", ["pyrite cube"], embedder.dim, seed=1))
        w.commit()
    reader = Retriever(Collection.open(collection.folder), embedder)  # a long-lived reader in this process
    assert [h.text for h in reader.search("zanzibarite", k=2, mode="bm25")] == ["zanzibarite ore"]
    assert _read_bm25_in_new_process(collection.folder, "zanzibarite", "pyrite") == {
        "generation": 1, "zanzibarite": [1], "pyrite": [3]}

    with collection.writer() as w:  # the file is replaced: its old words must go with it
        w.replace_file("/a.txt", "h3", 10, *_texts("/a.txt", ["granite slab"], embedder.dim, seed=2))
        w.commit()
    assert _read_bm25_in_new_process(collection.folder, "zanzibarite", "granite", "pyrite") == {
        "generation": 2, "zanzibarite": [], "granite": [4], "pyrite": [3]}
    assert reader.search("zanzibarite", k=2, mode="bm25") == []  # the reader moved to generation 2
    assert [h.text for h in reader.search("granite", k=2, mode="bm25")] == ["granite slab"]

    with collection.writer() as w:  # pruned
        w.remove_file("/b.txt")
        w.commit()
    assert _read_bm25_in_new_process(collection.folder, "pyrite", "granite") == {
        "generation": 3, "pyrite": [], "granite": [4]}
    assert reader.search("pyrite", k=2, mode="bm25") == []
    assert not (collection.folder / "bm25-2").exists()


def test_a_collection_without_a_saved_bm25_index_builds_it(collection, embedder):
    """Collections written before BM25 indexes were saved have none: each reader builds it."""
    import shutil

    from rag.retriever import Retriever

    with collection.writer() as w:
        w.replace_file("/a.txt", "h1", 10, *_texts("/a.txt", ["zanzibarite ore", "quartz vein"], embedder.dim))
        w.commit()
    shutil.rmtree(collection.folder / "bm25-1")
    hits = Retriever(Collection.open(collection.folder), embedder).search("quartz", k=1, mode="bm25")
    assert [h.text for h in hits] == ["quartz vein"]


def test_failed_bm25_save_leaves_the_generation_as_it_was(collection, embedder, monkeypatch):
    with collection.writer() as w:
        w.replace_file("/a.txt", "h1", 10, *_texts("/a.txt", ["zanzibarite ore"], embedder.dim))
        w.commit()
        real_save = BM25Index.save

        def crash(self, folder):  # killed half-way: some files are in the temp folder
            (folder.parent / f"{folder.name}.tmp").mkdir()
            (folder.parent / f"{folder.name}.tmp" / "vids.npy").write_bytes(b"half")
            raise OSError("No space left on device")

        monkeypatch.setattr(BM25Index, "save", crash)
        w.replace_file("/b.txt", "h2", 10, *_texts("/b.txt", ["pyrite cube"], embedder.dim, seed=1))
        with pytest.raises(OSError, match="No space left"):
            w.commit()
        monkeypatch.setattr(BM25Index, "save", real_save)
    again = Collection.open(collection.folder)
    assert again.generation == 1 and again.file_hashes() == {"/a.txt": "h1"}
    assert sorted(p.name for p in collection.folder.iterdir() if p.name.startswith(("index-", "bm25-"))) == [
        "bm25-1", "index-1.faiss"]
    assert [v for v, _ in again.load_bm25().search("zanzibarite", 5)] == [1]


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_an_approximate_index_is_rebuilt_once_it_outgrows_its_tuning(collection, embedder, kind):
    """Grown by many small commits, not one big one: the size it was built at is recorded."""
    with collection.writer(index_type=kind) as w:
        w.replace_file("/f0.txt", "h", 1, *_chunks("/f0.txt", 400, embedder.dim))
        w.commit()
        assert collection.get_meta("index_built_size") == "400"
        for n in range(1, 14):  # +100 chunks a commit, never 4x the previous size in one go
            w.replace_file(f"/f{n}.txt", "h", 1, *_chunks(f"/f{n}.txt", 100, embedder.dim, seed=n))
            w.commit()
            built = "400" if 400 + 100 * n <= 1600 else "1700"
            assert collection.get_meta("index_built_size") == built
    assert collection.index.kind == kind and collection.index.ntotal == 1700


def test_a_bm25_index_of_another_format_is_refused_and_rebuilt(collection, embedder):
    """A saved index tokenised some other way (an older or newer rag) is never searched as if it were current."""
    import json

    with collection.writer() as w:
        w.replace_file("/a.txt", "h1", 10, *_texts("/a.txt", ["zanzibarite ore", "quartz vein"], embedder.dim))
        w.commit()
    folder = collection.folder / "bm25-1"
    (folder / "format.json").write_text(json.dumps({"format": 0}))
    with pytest.raises(ValueError, match="written as"):
        BM25Index.load(folder)
    assert [v for v, _ in collection.load_bm25().search("quartz", 5)] == [2]  # built from the texts instead


def _sectioned(path: str, headings: list[str], dim: int, seed: int):
    chunks, vectors = _chunks(path, len(headings), dim, seed)
    return [Chunk(c.id, c.source, c.page, c.start, c.end, c.text, h) for c, h in zip(chunks, headings)], vectors


def _mean(vectors: np.ndarray) -> np.ndarray:
    mean = vectors.mean(axis=0)
    return mean / np.linalg.norm(mean)


def test_each_section_keeps_the_mean_of_its_chunks_vectors_through_every_kind_of_generation(collection, embedder):
    dim = embedder.dim
    with collection.writer() as w:
        w.replace_file("/a.md", "h1", 10, *_sectioned("/a.md", ["A > 1", "A > 1", "A > 2"], dim, seed=0))
        w.replace_file("/b.txt", "h2", 10, *_sectioned("/b.txt", ["", ""], dim, seed=1))
        w.commit()
    vids = [c.vid for c in collection.all_chunks()]  # /a.md's three, then /b.txt's two
    stored = collection.vectors_by_vid(vids)
    sections = collection.section_vectors(vids)
    assert np.allclose(sections[0], _mean(stored[:2]), atol=1e-6) and np.allclose(sections[1], sections[0])
    assert np.allclose(sections[2], stored[2], atol=1e-6)  # a section of one chunk is that chunk
    assert np.allclose(sections[3], _mean(stored[3:]), atol=1e-6)  # no headings: the whole file
    assert not collection.section_vectors([10_000]).any()  # a vid not stored: a zero row

    with collection.writer() as w:  # a replaced file's sections follow it; a removed file's go
        w.replace_file("/a.md", "h3", 10, *_sectioned("/a.md", ["A > 1", "A > 3"], dim, seed=2))
        w.remove_file("/b.txt")
        w.commit()
    rows = collection.db.execute("SELECT path, heading, n FROM sections ORDER BY heading").fetchall()
    assert rows == [("/a.md", "A > 1", 1), ("/a.md", "A > 3", 1)]

    with collection.writer() as w:  # re-embedded: the sections are computed again from the new vectors
        w.reembed(lambda texts: np.eye(len(texts), dim, dtype=np.float32), {})
    vids = [c.vid for c in collection.all_chunks()]
    assert np.allclose(collection.section_vectors(vids), collection.vectors_by_vid(vids))


def test_a_collection_committed_before_sections_were_kept_works_them_out_until_its_next_commit(collection, embedder):
    with collection.writer() as w:
        w.replace_file("/a.md", "h1", 10, *_sectioned("/a.md", ["A", "A", "B"], embedder.dim, seed=0))
        w.commit()
    vids = [c.vid for c in collection.all_chunks()]
    kept = collection.section_vectors(vids)
    with collection._transaction():  # as an older version of the store left it
        collection.db.execute("DELETE FROM sections")
        collection.db.execute("DELETE FROM meta WHERE key = 'sections'")
    old = Collection.open(collection.folder)
    assert np.allclose(old.section_vectors(vids), kept, atol=1e-6)
    with old.writer() as w:  # any commit fills the table for every file, not only those it touched
        w.replace_file("/b.md", "h2", 10, *_sectioned("/b.md", ["C"], embedder.dim, seed=1))
        w.commit()
    assert old.db.execute("SELECT COUNT(*) FROM sections").fetchone()[0] == 3
    assert np.allclose(old.section_vectors(vids), kept, atol=1e-6)
