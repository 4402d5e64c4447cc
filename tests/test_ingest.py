import shutil

from conftest import SAMPLE
from ingest.pipeline import ingest


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


def test_changed_file_that_breaks_keeps_its_old_chunks(tmp_path, collection, embedder, chunker):
    doc = tmp_path / "doc.txt"
    doc.write_text("The lighthouse was first lit in 1887.")
    ingest([doc], collection, embedder, chunker)
    doc.write_bytes(b"\x00\x00\x00binary now" * 50)
    report = ingest([doc], collection, embedder, chunker)
    assert report.failed == 1
    assert "1887" in collection.chunks_of(str(doc))[0].text
