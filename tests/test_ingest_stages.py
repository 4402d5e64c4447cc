"""The ingest stages overlap and batch across files: many small files make full embedding batches,
a file split over batches gets its own vectors, the reader stays a bounded number of files and of
chunks ahead,
and a bug in the reader thread surfaces with its traceback (real MiniLM, FAISS and SQLite)."""

import threading
import time

import numpy as np
import pytest

import ingest.pipeline as pipeline
from ingest.pipeline import EMBED_STEP, ingest, read_ahead


class Counting:
    """The real embedder, recording the size of each call."""

    def __init__(self, embedder):
        self.inner, self.calls = embedder, []
        self.name, self.dim, self.dtype = embedder.name, embedder.dim, embedder.dtype
        self.max_seq_length, self.tokenizer = embedder.max_seq_length, embedder.tokenizer

    def embed(self, texts):
        self.calls.append(len(texts))
        return self.inner.embed(texts)


def small_files(folder, n):
    folder.mkdir()
    for i in range(n):
        (folder / f"note-{i:03d}.txt").write_text(f"Note {i}. The pump in shed {i} was serviced on day {i}.\n"
                                                  f"Its filter number is F-{i * 7}.\n", encoding="utf-8")
    return folder


def test_small_files_share_full_batches_and_every_file_gets_its_own_vectors(tmp_path, collection, embedder, chunker):
    docs = small_files(tmp_path / "docs", 300)
    big = docs / "big.txt"
    big.write_text("\n\n".join(f"Section {i}: the valve {i} opens at {i * 3} bar and closes at {i * 2} bar. " * 6
                               for i in range(150)), encoding="utf-8")
    counting = Counting(embedder)
    report = ingest([docs], collection, counting, chunker)
    assert report.new == 301 and report.failed == 0
    total = sum(counting.calls)
    assert total == report.chunks_added > EMBED_STEP
    # one call per EMBED_STEP chunks, not one per file (301 files)
    assert len(counting.calls) == -(-total // EMBED_STEP) and all(c == EMBED_STEP for c in counting.calls[:-1])
    for path in (big, docs / "note-000.txt", docs / "note-299.txt"):
        stored = collection.chunks_of(str(path))
        vectors = collection.vectors_by_vid([c.vid for c in stored])
        fresh = embedder.embed([f"{c.heading}\n{c.text}" if c.heading else c.text for c in stored])
        assert np.allclose(vectors, fresh, atol=1e-5), path.name
    assert len(collection.chunks_of(str(big))) > EMBED_STEP // 4


def test_reader_stays_a_bounded_number_of_files_ahead(tmp_path, chunker):
    docs = small_files(tmp_path / "docs", 40)
    files = sorted(docs.iterdir())
    parsed = []
    original = pipeline.parse_file

    def counting_parse(path, reader_chunker, *args):
        # the thread chunks with its own tokenizer: one shared with the embedder breaks its padded batches
        assert reader_chunker.tokenizer is not chunker.tokenizer
        assert reader_chunker._splitter.tokenizer is reader_chunker.tokenizer
        parsed.append(path)
        return original(path, reader_chunker, *args)

    pipeline.parse_file, seen = counting_parse, 0
    try:
        for item in read_ahead(files, {}, chunker, depth=4):
            seen += 1
            time.sleep(0.02)  # a slow consumer: the reader must wait for it
            assert len(parsed) - seen <= 4 + 1
            assert item.path == files[seen - 1]  # in order
    finally:
        pipeline.parse_file = original
    assert seen == 40
    assert not [t for t in threading.enumerate() if t.name == "ingest-reader"]


def test_reader_stays_a_bounded_number_of_chunks_ahead(tmp_path, chunker, monkeypatch):
    """Small files: the bound is in chunks, so a batch's worth is ready however small the files are;
    a file with more chunks than the bound still goes through."""
    docs = small_files(tmp_path / "docs", 30)
    (docs / "note-015-big.txt").write_text(" ".join(f"word{i} is here." for i in range(2000)))
    files = sorted(docs.iterdir())
    made: list[int] = []  # chunks of each file the reader parsed, in order
    original = pipeline.parse_file

    def counting_parse(path, *args):
        doc, chunks = original(path, *args)
        made.append(len(chunks))
        return doc, chunks

    monkeypatch.setattr(pipeline, "parse_file", counting_parse)
    taken = 0
    for seen, item in enumerate(read_ahead(files, {}, chunker, chunks=3, depth=100), start=1):
        taken += len(item.parsed[1])
        time.sleep(0.02)  # a slow consumer: the reader must wait for it
        assert sum(made) - taken <= 3 + made[-1]  # the file parsed last may take it past the bound
        assert item.path == files[seen - 1]
    assert seen == len(files) and max(made) > 3 and taken == sum(made)


def test_commits_take_a_bounded_share_of_the_ingest_however_slow_they_get(tmp_path, collection, embedder,
                                                                            chunker, monkeypatch):
    """A commit rebuilds BM25 from every chunk, so it slows as the collection grows; the wait after
    one grows with it, and periodic commits stay near COMMIT_SHARE of the time instead of taking
    over a bulk ingest of a large collection."""
    docs = small_files(tmp_path / "docs", 120)
    monkeypatch.setattr(pipeline, "EMBED_STEP", 4)  # a file is staged after every few chunks
    monkeypatch.setattr(pipeline, "COMMIT_EVERY", 1)
    monkeypatch.setattr(pipeline, "COMMIT_SECONDS", 0.0)
    spent: list[float] = []
    original = pipeline.commit

    def slow_commit(writer, report):  # a commit as slow as one into a collection of millions
        began = time.monotonic()
        time.sleep(0.25)
        original(writer, report)
        spent.append(time.monotonic() - began)

    monkeypatch.setattr(pipeline, "commit", slow_commit)
    report = ingest([docs], collection, embedder, chunker)
    assert report.chunks_added == 120 and collection.count()[0] == 120
    periodic = sum(spent[:-1])  # the last one ends the ingest whatever its cost
    assert 2 <= len(spent) and periodic <= 2 * pipeline.COMMIT_SHARE * report.seconds + 0.3, (spent, report.seconds)


def test_a_bug_in_the_reader_thread_is_raised_and_nothing_is_stored(tmp_path, collection, embedder, chunker,
                                                                     monkeypatch):
    docs = small_files(tmp_path / "docs", 5)

    def broken(path, *args):
        raise KeyError("a bug in parsing")

    monkeypatch.setattr(pipeline, "parse_file", broken)
    with pytest.raises(KeyError, match="a bug in parsing"):
        ingest([docs], collection, embedder, chunker)
    assert collection.count() == (0, 0)
    assert not [t for t in threading.enumerate() if t.name == "ingest-reader"]
