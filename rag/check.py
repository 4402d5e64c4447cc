"""Check: verify that a collection's SQLite rows, FAISS index and folder agree, and repair them.

What is verified (each failure is one line in `CheckReport.problems`):
- the index file of the recorded generation exists and holds exactly the ids of the stored chunks;
- its BM25 folder, when there is one, reads and scores exactly the stored chunks (a collection
  written before BM25 indexes were saved has none: a note, as each process then builds it);
- each file row counts its chunks right, no chunk is left without its file row, every chunk id is
  the content hash of its own source, page, span and text, and every stored vector has the
  collection's dimension;
- no orphan files: index files and BM25 folders of other generations, temp files of a killed writer.
Sources that changed or vanished on disk since they were ingested are notes, not problems: the
collection is consistent, only due for `rag ingest` (or `--prune`).

`repair` takes the write lock, drops chunk rows whose file row is gone, fixes the counts, rebuilds
the index from the vectors in SQLite (and the BM25 index from the texts) as a new generation, and
deletes orphans. A chunk whose text no
longer matches its id cannot be repaired here: re-ingest its file. It does not parse or embed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rag.bm25 import BM25Index
from rag.chunking import chunk_id
from rag.index import load_index
from rag.store import Collection


@dataclass
class CheckReport:
    collection: str
    generation: int
    files: int
    chunks: int
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict:
        return {"collection": self.collection, "ok": self.ok, "generation": self.generation, "files": self.files,
                "chunks": self.chunks, "problems": self.problems, "notes": self.notes, "repaired": self.repaired}


def check_collection(coll: Collection, *, sources: bool = True) -> CheckReport:
    """Verify `coll` as committed on disk (not the copy loaded in memory). With `sources`, also
    hash the source files to note the ones that changed since they were ingested."""
    db = coll.db
    generation = int(coll._meta("generation") or 0)
    files, chunks = coll.count()
    report = CheckReport(coll.name, generation, files, chunks)
    problems = report.problems

    vids = np.array([r[0] for r in db.execute("SELECT vid FROM chunks ORDER BY vid")], dtype=np.int64)
    path = coll._index_path(generation)
    if not path.exists():
        if chunks:
            problems.append(f"index file {path.name} of generation {generation} is missing")
    else:
        try:
            ids = np.sort(load_index(path).ids())
        except RuntimeError as exc:  # faiss's error for an unreadable file
            problems.append(f"index file {path.name} is unreadable: {str(exc).splitlines()[0]}")
        else:
            if len(ids) != len(vids):
                problems.append(f"index holds {len(ids)} vectors but the store {len(vids)} chunks")
            missing, extra = np.setdiff1d(vids, ids), np.setdiff1d(ids, vids)
            if len(missing) or len(extra):
                problems.append(f"index and store disagree: {len(missing)} chunk(s) not in the index, "
                                f"{len(extra)} index id(s) with no chunk")

    bm25_path = coll._bm25_path(generation)
    if not bm25_path.exists():
        if chunks:
            report.notes.append(f"no saved BM25 index {bm25_path.name} (each process builds it; --repair saves it)")
    else:
        try:
            bm25_vids = np.sort(BM25Index.load(bm25_path).vids)
        except (OSError, ValueError) as exc:
            problems.append(f"BM25 index {bm25_path.name} is unreadable: {str(exc).splitlines()[0]}")
        else:
            if not np.array_equal(bm25_vids, vids):
                problems.append(f"BM25 index {bm25_path.name} scores {len(bm25_vids)} chunk(s) but the store holds "
                                f"{len(vids)}, or other ones")

    for name, recorded, actual in db.execute(
        "SELECT f.path, f.n_chunks, COUNT(c.vid) FROM files f LEFT JOIN chunks c ON c.path = f.path "
        "GROUP BY f.path HAVING f.n_chunks != COUNT(c.vid)"
    ):
        problems.append(f"{name!r}: {actual} chunk(s) stored but {recorded} recorded")
    (orphan_chunks,) = db.execute(
        "SELECT COUNT(*) FROM chunks c LEFT JOIN files f ON f.path = c.path WHERE f.path IS NULL"
    ).fetchone()
    if orphan_chunks:
        problems.append(f"{orphan_chunks} chunk(s) belong to no file")
    bad_ids, bad_vectors = 0, 0
    for cid, source, page, start, text, vector in db.execute(
        "SELECT id, path, page, start, text, vector FROM chunks"
    ):
        bad_ids += chunk_id(source, page, start, text) != cid
        bad_vectors += len(vector) != coll.dim * 4
    if bad_ids:
        problems.append(f"{bad_ids} chunk(s) whose text does not match their id (re-ingest their files)")
    if bad_vectors:
        problems.append(f"{bad_vectors} stored vector(s) are not {coll.dim}-dimensional float32")

    for orphan in coll.orphans():
        if orphan not in (path, bm25_path):
            problems.append(f"orphan file {orphan.name} (left by an interrupted write)")

    if sources:
        from ingest.pipeline import sha256_file
        from rag.loading import LoadError

        for name, sha in coll.file_hashes().items():
            try:
                current, _ = sha256_file(Path(name))
            except (OSError, LoadError):
                report.notes.append(f"{name!r}: the source is gone (rag ingest --prune removes its chunks)")
                continue
            if current != sha:
                report.notes.append(f"{name!r}: the source changed since it was ingested (run rag ingest again)")
    return report


def repair_collection(coll: Collection, *, wait: float = 0.0) -> list[str]:
    """Make the store and the index agree again; returns what was done, one line each."""
    done = [f"removed orphan file {p.name}" for p in coll.orphans()]
    with coll.writer(coll.index_type, wait=wait) as writer:  # taking the lock removes orphan files
        db = coll.db
        with coll._transaction():
            removed = db.execute(
                "DELETE FROM chunks WHERE path NOT IN (SELECT path FROM files)"
            ).rowcount
            fixed = db.execute(
                "UPDATE files SET n_chunks = (SELECT COUNT(*) FROM chunks c WHERE c.path = files.path) "
                "WHERE n_chunks != (SELECT COUNT(*) FROM chunks c WHERE c.path = files.path)"
            ).rowcount
        if removed:
            done.append(f"removed {removed} chunk(s) that belonged to no file")
        if fixed:
            done.append(f"corrected the chunk count of {fixed} file(s)")
        size = writer.rebuild_index()
        done.append(f"rebuilt the index from the stored vectors: {size} vectors, generation {coll.generation}")
    return done
