import shutil

import pytest

from conftest import SAMPLE
from ingest.pipeline import ingest
from rag.settings import Settings
from rag.store import Collection


def _stale(collection) -> int:
    """Chunks whose file is gone from the files table, or whose count disagrees with it."""
    rows = collection.db.execute(
        "SELECT COUNT(*) FROM chunks c LEFT JOIN files f ON f.path = c.path WHERE f.path IS NULL"
    ).fetchone()[0]
    counted = collection.db.execute("SELECT COALESCE(SUM(n_chunks), 0) FROM files").fetchone()[0]
    return rows + abs(counted - collection.count()[1])


def test_incremental_reingest_change_and_prune(tmp_path, collection, embedder, chunker):
    docs = tmp_path / "docs"
    shutil.copytree(SAMPLE, docs)
    first = ingest([docs], collection, embedder, chunker)
    assert (first.new, first.changed, first.unchanged, first.failed) == (4, 0, 0, 0)
    total = collection.count()[1]
    assert first.chunks_added == total > 0

    again = ingest([docs], collection, embedder, chunker)
    assert (again.new, again.changed, again.unchanged, again.chunks_added, again.chunks_removed) == (0, 0, 4, 0, 0)

    tea = docs / "green_tea.txt"
    old_tea = len(collection.chunks_of(str(tea)))
    tea.write_text("Green tea is fixed by steaming. Matcha is ground into a fine powder and whisked.\n")
    changed = ingest([docs], collection, embedder, chunker)
    assert (changed.changed, changed.unchanged, changed.chunks_removed, changed.chunks_added) == (1, 3, old_tea, 1)
    assert "Matcha" in collection.chunks_of(str(tea))[0].text
    assert _stale(collection) == 0

    (docs / "tidy_t3_manual.html").unlink()
    kept = ingest([docs], collection, embedder, chunker)  # without --prune nothing is removed
    assert kept.pruned == 0 and len(collection.chunks_of(str(docs / "tidy_t3_manual.html"))) > 0
    pruned = ingest([docs], collection, embedder, chunker, prune=True)
    assert pruned.pruned == 1 and pruned.chunks_removed > 0
    assert collection.chunks_of(str(docs / "tidy_t3_manual.html")) == []
    assert collection.index.ntotal == collection.count()[1]
    assert _stale(collection) == 0


def test_files_chunked_otherwise_are_read_again(tmp_path, collection, embedder, chunker):
    """Unchanged files chunked with other chunk settings, or by an older parser (a collection made
    before the signature was stored records none), are read again by the next ingest, and only once;
    one that no longer parses keeps its chunks, which still say what the file says."""
    from rag.chunking import Chunker

    docs = tmp_path / "docs"
    shutil.copytree(SAMPLE, docs)
    ingest([docs], collection, embedder, chunker)
    before = {c.id for c in collection.all_chunks()}
    smaller = Chunker(embedder.tokenizer, embedder.max_seq_length, 60, 10)
    report = ingest([docs], collection, embedder, smaller)
    assert (report.new, report.changed, report.unchanged, report.reparsed, report.failed) == (0, 0, 0, 4, 0)
    assert "reparsed 4 (chunked by an older parser or other chunk settings; " in report.summary()
    assert collection.count()[1] == report.chunks_added > report.chunks_removed == len(before)
    assert max(len(embedder.tokenizer.tokenize(c.text)) for c in collection.all_chunks()) <= 60
    assert _stale(collection) == 0
    again = ingest([docs], collection, embedder, smaller)
    assert (again.unchanged, again.reparsed, again.chunks_added) == (4, 0, 0)

    collection.db.execute("ALTER TABLE files DROP COLUMN parsed_with")  # as a collection made before it
    collection.close()
    collection = Collection.open(collection.folder)
    pdf = str(docs / "marmot_field_notes.pdf")
    old_pdf = {c.id for c in collection.chunks_of(pdf)}
    others = [str(docs / name) for name in ("green_tea.txt", "korvik_lighthouse.md", "tidy_t3_manual.html")]
    old_vectors = {path: collection.file_vectors(path) for path in others}
    report = ingest([docs], collection, embedder, smaller, settings=Settings(max_file_mb=3000 / 2**20))  # < the PDF
    assert (report.reparsed, report.failed) == (3, 1)
    # read with the same chunker again: the same chunks, which keep their stored vectors, none embedded
    assert report.chunks_added == report.chunks_removed == report.chunks_reused == collection.count()[1] - len(old_pdf)
    for path in others:
        now = collection.file_vectors(path)
        assert now.keys() == old_vectors[path].keys() and all((now[k] == v).all() for k, v in old_vectors[path].items())
    assert len(report.errors) == 1 and "marmot_field_notes.pdf" in report.errors[0]
    assert report.errors[0].endswith("its chunks from the earlier reading were kept")
    assert {c.id for c in collection.chunks_of(pdf)} == old_pdf
    assert _stale(collection) == 0
    collection.close()


def test_a_reread_file_embeds_only_its_chunks_that_changed(tmp_path, collection, embedder, chunker):
    """A file read again for a new parser keeps the vectors of the chunks it makes as before; a chunk
    whose heading path changed (what it is embedded with) is embedded again."""
    import numpy as np

    docs = tmp_path / "docs"
    docs.mkdir()
    shutil.copy(SAMPLE / "korvik_lighthouse.md", docs)
    ingest([docs], collection, embedder, chunker)
    path = str(docs / "korvik_lighthouse.md")
    chunks = collection.chunks_of(path)
    changed = chunks[1]
    collection.db.execute("UPDATE chunks SET heading = 'An older heading' WHERE id = ?", (changed.id,))
    collection.db.execute("UPDATE files SET parsed_with = 'parser 1'")
    report = ingest([docs], collection, embedder, chunker)
    assert (report.reparsed, report.chunks_reused, report.chunks_added) == (1, len(chunks) - 1, len(chunks))
    stored = collection.file_vectors(path)
    (fresh,) = embedder.embed([f"{changed.heading}\n{changed.text}"])
    assert np.allclose(stored[changed.id, changed.heading], fresh, atol=1e-5)
    assert collection.index.ntotal == collection.count()[1] == len(chunks)


def test_bad_files_are_reported_and_the_rest_lands(tmp_path, collection, embedder, chunker):
    good = tmp_path / "good.md"
    good.write_text("Marmots whistle when an eagle flies over.")
    first = ingest([good], collection, embedder, chunker)
    assert first.new == 1
    stored = collection.count()

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "empty.txt").write_bytes(b"")
    (bad / "binary.txt").write_bytes(b"\x00\x01\x02" * 300)
    (bad / "corrupt.pdf").write_bytes(b"%PDF-1.7 garbage")
    (bad / "fine.txt").write_text("The Tidy T3 dust bin holds 0.4 litres.")
    (tmp_path / "notes.docx").write_bytes(b"PK\x03\x04")
    report = ingest([bad, tmp_path / "missing.md", tmp_path / "notes.docx"], collection, embedder, chunker)
    assert (report.new, report.failed) == (1, 5)
    assert all("\n" not in e for e in report.errors)
    joined = "\n".join(report.errors)
    for needle in ("empty.txt: empty file", "binary.txt: binary data", "corrupt.pdf: not a readable PDF",
                   "missing.md: no such file", "notes.docx: unsupported file type"):
        assert needle in joined
    files, chunks = collection.count()
    assert files == stored[0] + 1 and chunks == stored[1] + 1  # nothing lost, the good file added


@pytest.mark.parametrize("broken", [b"\x00\x00\x00binary now" * 50, b"", b"   \n"])
def test_changed_file_that_breaks_loses_its_old_chunks(tmp_path, collection, embedder, chunker, broken):
    doc = tmp_path / "doc.txt"
    doc.write_text("The lighthouse was first lit in 1887.")
    other = tmp_path / "other.txt"
    other.write_text("Marmots hibernate for about six months.")
    ingest([doc, other], collection, embedder, chunker)
    doc.write_bytes(broken)
    report = ingest([doc, other], collection, embedder, chunker)
    assert (report.failed, report.unchanged, report.chunks_removed) == (1, 1, 1)
    assert report.errors[0].endswith("; its previous chunks were removed")
    assert collection.chunks_of(str(doc)) == []  # 1887 is no longer served as if the file said it
    assert collection.file_hashes().keys() == {str(other)}
    assert collection.index.ntotal == collection.count()[1] == 1


def test_fifo_and_device_files_are_refused_without_blocking(tmp_path, collection, embedder, chunker):
    import os

    good = tmp_path / "good.txt"
    good.write_text("The dust bin holds 0.4 litres.")
    os.mkfifo(tmp_path / "x.txt")
    (tmp_path / "zero.txt").symlink_to("/dev/zero")
    report = ingest([str(tmp_path / "*.txt")], collection, embedder, chunker)  # a glob matches the FIFO
    assert (report.new, report.failed) == (1, 2)
    assert all("not a regular file" in e for e in report.errors)
    folder = ingest([tmp_path], collection, embedder, chunker)  # inside a folder: skipped, counted
    assert folder.failed == 0 and folder.skipped["not a regular file (a FIFO, device or socket); " 
                                                  "only regular files are read"] == 2


def test_folder_walk_reports_what_it_skips(tmp_path, collection, embedder, chunker):
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "a.md").write_text("Alpha notes about lighthouses.")
    (docs / "report.docx").write_bytes(b"PK\x03\x04")
    (docs / "sheet.xlsx").write_bytes(b"PK\x03\x04")
    (docs / ".secret.txt").write_text("hidden")
    (docs / "sub" / "loop").symlink_to(docs, target_is_directory=True)  # a symbolic-link loop
    (docs / "sub" / "b.txt").write_text("Beta notes about marmots.")
    report = ingest([docs], collection, embedder, chunker)
    assert (report.new, report.failed) == (2, 0)
    assert report.skipped == {"unsupported file type '.docx'": 1, "unsupported file type '.xlsx'": 1,
                              "hidden": 1, "symbolic-link loop (folder already visited)": 1}
    assert "skipped in folders:" in report.summary()
    assert any(line.endswith("report.docx: unsupported file type '.docx'") for line in report.skipped_files)


def test_a_name_with_a_newline_cannot_forge_an_error_line(tmp_path, collection, embedder, chunker):
    evil = tmp_path / "x.txt\nerror: forged.txt"
    evil.write_bytes(b"")
    report = ingest([evil], collection, embedder, chunker)
    assert len(report.errors) == 1 and "\n" not in report.errors[0]
    assert report.errors[0].startswith("'") and report.errors[0].endswith("': empty file")


def test_progress_moves_within_a_large_file(tmp_path, collection, embedder, chunker, monkeypatch):
    import ingest.pipeline as pipeline

    monkeypatch.setattr(pipeline, "EMBED_STEP", 4)
    big = tmp_path / "big.txt"
    big.write_text("\n\n".join(f"Paragraph {n} says the lamp number {n} burns oil. " * 30 for n in range(12)))
    events = []
    ingest([big], collection, embedder, chunker, progress=events.append)
    within = [e for e in events if e.file is not None]
    assert len(within) >= 3 and within[-1].file_chunks_done == within[-1].file_chunks_total
    assert [e.chunks_embedded for e in within] == sorted(e.chunks_embedded for e in within)
    assert events[-1].files_done == events[-1].files_total == 1


def test_second_ingest_waits_for_the_lock(tmp_path, collection, embedder, chunker):
    import threading
    import time

    from rag.store import Collection, CollectionError

    doc = tmp_path / "doc.txt"
    doc.write_text("The ferry leaves at noon.")
    other = Collection.open(collection.folder)
    with collection.writer():
        with pytest.raises(CollectionError, match="being written by another process; add --wait"):
            ingest([doc], other, embedder, chunker)
        with pytest.raises(CollectionError, match=r"waited 0.3 s"):
            ingest([doc], other, embedder, chunker, wait=0.3)
    results = []
    with collection.writer():
        worker = threading.Thread(target=lambda: results.append(ingest([doc], other, embedder, chunker, wait=30)))
        worker.start()
        time.sleep(0.5)
        assert not results  # still queued behind the first writer
    worker.join(timeout=60)
    assert results and results[0].new == 1
