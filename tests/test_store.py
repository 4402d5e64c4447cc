import numpy as np
import pytest

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
