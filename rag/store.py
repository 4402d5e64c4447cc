"""Store: one collection = one folder holding a FAISS index, a BM25 index and a SQLite database.

SQLite keeps files (with content hashes), chunks, their vectors, one vector per section (the chunks of
a file that share a heading path) and a generation number; the index
file and the BM25 folder are named after the generation they belong to (index-<gen>.faiss,
bm25-<gen>/). A commit writes both durably first and then commits the SQLite transaction that moves
the generation, so a crash at any point leaves a collection whose indexes and metadata agree. It does
not parse, chunk or embed: callers hand it finished chunks and vectors.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

import numpy as np

from rag.errors import RagError
from rag.index import Index, IVFIndex, build_index, choose_kind, load_index

if TYPE_CHECKING:  # bm25s and the parsers behind chunking are imported where an index is written or built
    from rag.bm25 import BM25Index
    from rag.chunking import Chunk

DB_NAME = "collection.sqlite"
ADAPTED_MARK = "@adapted-"  # an adapted embedding model's name: "<base model>@adapted-<digest>" (rag.adapt)
ADAPTED_PREFIX = "embedder-"  # its folder inside the collection: "embedder-<digest>"
LOCK_NAME = ".write.lock"
STAGING_NAME = "staging"  # shards a distributed ingest wrote for its one commit (ingest/ray_engine.py)
VECTOR_BATCH = 65_536  # rows read back from SQLite at a time when an index is built or extended

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY, sha256 TEXT NOT NULL, size INTEGER NOT NULL,
    n_chunks INTEGER NOT NULL, ingested_at REAL NOT NULL,
    parsed_with TEXT NOT NULL DEFAULT ''  -- how it was chunked (rag.chunking.Chunker.signature; '': unknown)
);
CREATE TABLE IF NOT EXISTS chunks (
    vid INTEGER PRIMARY KEY AUTOINCREMENT,  -- the id the FAISS index knows the vector by
    id TEXT NOT NULL UNIQUE, path TEXT NOT NULL, page INTEGER,
    start INTEGER NOT NULL, "end" INTEGER NOT NULL, text TEXT NOT NULL,
    vector BLOB NOT NULL,  -- float32, L2-normalised; lets the index be rebuilt at any time
    heading TEXT NOT NULL DEFAULT ''  -- the section's heading path, embedded and BM25-indexed with the text
);
CREATE INDEX IF NOT EXISTS chunks_by_path ON chunks(path);
CREATE TABLE IF NOT EXISTS sections (
    path TEXT NOT NULL, heading TEXT NOT NULL,  -- a file's chunks that share a heading path ("": the whole file)
    n INTEGER NOT NULL,  -- how many
    vector BLOB NOT NULL,  -- float32, the L2-normalised mean of their vectors; kept with each generation
    PRIMARY KEY (path, heading)
);
"""
SECTIONS_KEY = "sections"  # meta: "1" once the sections table has been filled for every file


class CollectionError(RagError):
    """A collection that is missing, empty, damaged, or built for another embedding model."""


@dataclass
class StoredChunk:
    vid: int
    id: str
    source: str
    page: int | None
    start: int
    end: int
    text: str
    heading: str = ""


@dataclass
class CollectionInfo:
    name: str
    path: str
    files: int
    chunks: int
    index_type: str
    model: str
    generation: int
    damaged: str = ""  # why the collection could not be read; "" when it is fine


class Collection:
    def __init__(self, folder: Path, db: sqlite3.Connection):
        self.folder = folder
        self.db = db
        self.generation = -1
        self._index: Index | None = None

    # ---- opening ---------------------------------------------------------------------------

    @classmethod
    def open(cls, folder: Path, model: str | None = None, dim: int | None = None, create: bool = False) -> "Collection":
        """Open a collection; with `create`, make it (recording model and dim) if it is new.
        When `model` is given it must match the model the collection was built with."""
        folder = Path(folder)
        db_path = folder / DB_NAME
        if not db_path.exists():
            if not create:
                raise CollectionError(
                    f"collection '{folder.name}' does not exist (no {db_path}); create it with: rag ingest PATH "
                    f"--collection {folder.name}"
                )
            if model is None or dim is None:
                raise ValueError("creating a collection needs the embedding model name and dimension")
            _create_database(db_path, model, dim)
        try:
            db = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(SCHEMA)
            if "heading" not in {row[1] for row in db.execute("PRAGMA table_info(chunks)")}:
                db.execute("ALTER TABLE chunks ADD COLUMN heading TEXT NOT NULL DEFAULT ''")  # made before headings
            if "parsed_with" not in {row[1] for row in db.execute("PRAGMA table_info(files)")}:
                db.execute("ALTER TABLE files ADD COLUMN parsed_with TEXT NOT NULL DEFAULT ''")  # made before it
            coll = cls(folder, db)
            recorded = coll._meta("model")
        except sqlite3.DatabaseError as exc:
            raise CollectionError(f"collection '{folder.name}' is damaged: {db_path} is not readable ({exc})") from None
        if recorded is None:
            # Collections are created whole (see _create_database); this one was not, or was emptied.
            db.close()
            raise CollectionError(
                f"collection '{folder.name}' is damaged: {db_path} records no embedding model; "
                f"remove the folder {folder} and ingest again"
            )
        if model is not None and recorded != model:
            db.close()
            raise CollectionError(
                f"collection '{folder.name}' was built with embedding model {recorded!r}, not {model!r}; "
                "use that model or a new collection"
            )
        try:
            coll.refresh()
        except (RuntimeError, sqlite3.DatabaseError, ValueError) as exc:  # faiss raises RuntimeError on a bad file
            db.close()
            raise CollectionError(f"collection '{folder.name}' is damaged: {exc}") from None
        return coll

    def close(self) -> None:
        self.db.close()

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def model(self) -> str:
        return self._meta("model") or ""

    @property
    def dim(self) -> int:
        return int(self._meta("dim") or 0)

    @property
    def index_type(self) -> str:
        return self._meta("index_type") or "flat"

    def get_meta(self, key: str) -> str | None:
        """A value recorded in the collection (e.g. by rag tune), re-read from the database."""
        return self._meta(key)

    def set_meta(self, values: dict[str, str]) -> None:
        """Record values in the collection in one transaction; readers see them on their next read."""
        with self._transaction():
            for key, value in values.items():
                self._set_meta(key, value)

    def _meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def _set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    def _index_path(self, generation: int) -> Path:
        return self.folder / f"index-{generation}.faiss"

    def _bm25_path(self, generation: int) -> Path:
        return self.folder / f"bm25-{generation}"

    def refresh(self) -> bool:
        """Reload the index if another process committed a newer generation; True when reloaded."""
        generation = int(self._meta("generation") or 0)
        if generation == self.generation and self._index is not None:
            return False
        n_chunks = self.db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
        path = self._index_path(generation)
        index = load_index(path) if path.exists() else None
        if index is None or index.ntotal != n_chunks:
            # Only a collection created before its first commit, or a damaged folder, lands here.
            index = self._rebuild(self.index_type)
        self._index, self.generation = index, generation
        return True

    # ---- reading ---------------------------------------------------------------------------

    @property
    def index(self) -> Index:
        assert self._index is not None
        return self._index

    @property
    def embedding_dtype(self) -> str | None:
        """The precision its vectors were embedded in; None while it holds none. Collections made
        before the precision was recorded hold float32 vectors."""
        return _embedding_dtype(self.db)

    def count(self) -> tuple[int, int]:
        files = self.db.execute("SELECT COUNT(*) FROM files").fetchone()[0]
        chunks = self.db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
        return files, chunks

    def info(self) -> CollectionInfo:
        files, chunks = self.count()
        return CollectionInfo(self.name, str(self.folder), files, chunks, self.index_type, self.model, self.generation)

    def file_hashes(self, parsed_with: str | None = None) -> dict[str, str]:
        """Each stored file's content hash. Given the signature of the chunker at hand
        (`Chunker.signature`), a file chunked otherwise (another parser version or other chunk
        settings) gets the hash "", which no content has: ingest takes it as changed and reads it again."""
        if parsed_with is None:
            return dict(self.db.execute("SELECT path, sha256 FROM files"))
        return dict(self.db.execute("SELECT path, CASE WHEN parsed_with = ? THEN sha256 ELSE '' END FROM files",
                                    (parsed_with,)))

    def chunks_by_vid(self, vids: list[int]) -> dict[int, StoredChunk]:
        if not vids:
            return {}
        marks = ",".join("?" * len(vids))
        rows = self.db.execute(
            f'SELECT vid, id, path, page, start, "end", text, heading FROM chunks WHERE vid IN ({marks})', vids
        )
        return {row[0]: StoredChunk(*row) for row in rows}

    def vectors_by_vid(self, vids: list[int]) -> np.ndarray:
        """(len(vids), dim) float32 in the order given; a vid that is not stored gives a zero row."""
        out = np.zeros((len(vids), self.dim), dtype=np.float32)
        if vids:
            marks = ",".join("?" * len(vids))
            rows = dict(self.db.execute(f"SELECT vid, vector FROM chunks WHERE vid IN ({marks})", vids))
            for row, vid in enumerate(vids):
                if vid in rows:
                    out[row] = np.frombuffer(rows[vid], dtype=np.float32)
        return out

    def section_vectors(self, vids: list[int]) -> np.ndarray:
        """(len(vids), dim) float32: for each chunk, the vector of its section (the normalised mean of
        the vectors of the chunks that share its file and heading path); a zero row for a vid not stored."""
        out = np.zeros((len(vids), self.dim), dtype=np.float32)
        if not vids:
            return out
        marks = ",".join("?" * len(vids))
        rows = self.db.execute(
            f"SELECT c.vid, c.path, c.heading, s.vector FROM chunks c LEFT JOIN sections s "
            f"ON s.path = c.path AND s.heading = c.heading WHERE c.vid IN ({marks})", vids).fetchall()
        found = {vid: (path, heading, blob) for vid, path, heading, blob in rows}
        computed: dict[str, dict[str, tuple[int, np.ndarray]]] = {}  # path -> its sections, when not stored
        for row, vid in enumerate(vids):
            if vid not in found:
                continue
            path, heading, blob = found[vid]
            if blob is None:  # a collection last committed before sections were kept: worked out until then
                if path not in computed:
                    computed[path] = self._sections_of(path)
                out[row] = computed[path][heading][1]
            else:
                out[row] = np.frombuffer(blob, dtype=np.float32)
        return out

    def all_texts(self) -> tuple[list[int], list[str]]:
        """(vids, indexed texts): each chunk's heading path and text, as BM25 indexes them."""
        from rag.chunking import indexed_text

        rows = self.db.execute("SELECT vid, text, heading FROM chunks ORDER BY vid").fetchall()
        return [r[0] for r in rows], [indexed_text(r[2], r[1]) for r in rows]

    def all_chunks(self) -> list[StoredChunk]:
        rows = self.db.execute('SELECT vid, id, path, page, start, "end", text, heading FROM chunks ORDER BY path, start')
        return [StoredChunk(*row) for row in rows]

    def file_vectors(self, path: str) -> dict[tuple[str, str], np.ndarray]:
        """The stored vector of each chunk of `path`, by (chunk id, heading path): what was embedded."""
        rows = self.db.execute("SELECT id, heading, vector FROM chunks WHERE path = ?", (path,))
        return {(cid, heading): np.frombuffer(blob, dtype=np.float32) for cid, heading, blob in rows}

    def chunks_of(self, path: str) -> list[StoredChunk]:
        rows = self.db.execute(
            'SELECT vid, id, path, page, start, "end", text, heading FROM chunks WHERE path = ? ORDER BY vid', (path,)
        )
        return [StoredChunk(*row) for row in rows]

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Search the loaded generation; call `refresh` first to see other processes' commits."""
        return self.index.search(vectors, k)

    def load_bm25(self) -> BM25Index:
        """The BM25 index saved with the loaded generation, memory-mapped; built from the chunk texts
        when its folder is missing (a collection written before BM25 indexes were saved)."""
        from rag.bm25 import BM25Index

        try:
            return BM25Index.load(self._bm25_path(self.generation))
        except (OSError, ValueError):
            return BM25Index.build(*self.all_texts())

    # ---- writing ---------------------------------------------------------------------------

    @contextmanager
    def writer(self, index_type: str = "auto", exact_threshold: int = 20_000,
               wait: float = 0.0) -> Iterator["Writer"]:
        """Exclusive writer (a file lock keeps two ingests from interleaving). With `wait` > 0 it
        queues behind another writer for up to that many seconds (math.inf: as long as it takes)."""
        with open(self.folder / LOCK_NAME, "w") as lock:
            deadline = time.monotonic() + wait
            while True:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        waited = f" (waited {wait:g} s)" if wait else "; add --wait to queue behind it"
                        raise CollectionError(
                            f"collection '{self.name}' is being written by another process{waited}"
                        ) from None
                    time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
            self.refresh()
            self.remove_orphans()
            yield Writer(self, index_type, exact_threshold)

    def orphans(self) -> list[Path]:
        """Files a killed writer can leave behind: index files and BM25 folders of other generations,
        and temp files."""
        current = {self._index_path(self.generation).name, self._bm25_path(self.generation).name}
        found = [p for p in self.folder.glob("index-*.faiss") if p.name not in current]
        found += [p for p in self.folder.glob("bm25-*") if p.name not in current]  # bm25-<gen>.tmp too
        found += list(self.folder.glob("index-*.faiss.tmp")) + list(self.folder.glob(f"{DB_NAME}.tmp-*"))
        found += [p for p in [self.folder / STAGING_NAME] if p.exists()]  # a distributed ingest's, never committed
        recorded = adapted_folder(self.folder, self.model)  # rag tune's adapted copy in use, if any
        found += [p for p in self.folder.glob(f"{ADAPTED_PREFIX}*") if p != recorded]
        return sorted(found)

    def remove_orphans(self) -> list[Path]:
        """Delete `orphans()`; only safe while holding the write lock (a writer's temp file is live)."""
        from rag.bm25 import remove_tree

        removed = self.orphans()
        for path in removed:
            remove_tree(path)
        return removed

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def _rebuild(self, kind: str) -> Index:
        (n,) = self.db.execute("SELECT COUNT(*) FROM chunks").fetchone()
        if kind == "ivf":  # trained on a sample, filled batch by batch: memory does not grow with n
            return IVFIndex.build_from_batches(self.dim, n, lambda: self._vectors_after(0))
        # Filled batch by batch: one (n, dim) array, never a second copy of every row's bytes.
        ids = np.empty(n, dtype=np.int64)
        vectors = np.empty((n, self.dim), dtype=np.float32)
        at = 0
        for batch_ids, batch_vectors in self._vectors_after(0):
            ids[at:at + len(batch_ids)], vectors[at:at + len(batch_ids)] = batch_ids, batch_vectors
            at += len(batch_ids)
        return build_index(kind, self.dim, ids[:at], vectors[:at])

    def _update_sections(self, paths: Iterable[str] | None) -> None:
        """Recompute the section vectors of the files at `paths` from their stored chunks (None, or a
        collection never filled: of every file). Runs inside the transaction that changed the chunks."""
        if paths is None or self._meta(SECTIONS_KEY) != "1":
            self.db.execute("DELETE FROM sections")
            paths = [row[0] for row in self.db.execute("SELECT DISTINCT path FROM chunks")]
            self._set_meta(SECTIONS_KEY, "1")
        for path in paths:
            self.db.execute("DELETE FROM sections WHERE path = ?", (path,))
            self.db.executemany("INSERT INTO sections(path, heading, n, vector) VALUES (?, ?, ?, ?)",
                                [(path, heading, n, vector.tobytes())
                                 for heading, (n, vector) in self._sections_of(path).items()])

    def _sections_of(self, path: str) -> dict[str, tuple[int, np.ndarray]]:
        """Heading path -> (its chunks, the normalised mean of their vectors), for the file at `path`,
        from the stored chunks. A running sum: a file of a million chunks holds one vector per section."""
        sums: dict[str, np.ndarray] = {}
        counts: dict[str, int] = {}
        for heading, blob in self.db.execute("SELECT heading, vector FROM chunks WHERE path = ?", (path,)):
            vector = np.frombuffer(blob, dtype=np.float32)
            sums[heading] = sums[heading] + vector if heading in sums else vector.copy()
            counts[heading] = counts.get(heading, 0) + 1
        return {heading: (counts[heading], _normalised(total)) for heading, total in sums.items()}

    def _vectors_after(self, vid: int, batch: int = VECTOR_BATCH) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids, (m, dim) float32 vectors) of the chunks whose vid is above `vid`, in vid order, at
        most `batch` rows at a time."""
        cursor = self.db.execute("SELECT vid, vector FROM chunks WHERE vid > ? ORDER BY vid", (vid,))
        while rows := cursor.fetchmany(batch):
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            yield ids, np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), self.dim)


class Writer:
    """Stages file replacements and removals; `commit` makes them visible atomically."""

    def __init__(self, coll: Collection, index_type: str, exact_threshold: int):
        self.coll = coll
        self.index_type = index_type
        self.exact_threshold = exact_threshold
        self._replace: dict[str, tuple[str, int, list[Chunk], np.ndarray]] = {}
        self._remove: set[str] = set()
        self._streamed: dict[str, tuple[str, int, int]] = {}  # path -> (sha256, size, number of chunks)
        self._batches: Callable[[], Iterable[tuple[list[Chunk], np.ndarray]]] = lambda: ()
        self.parsed_with = ""  # recorded with every file this writer stores (rag.chunking.Chunker.signature)

    def replace_file(self, path: str, sha256: str, size: int, chunks: list[Chunk], vectors: np.ndarray) -> None:
        if len(chunks) != len(vectors):
            raise ValueError(f"{path}: {len(chunks)} chunks but {len(vectors)} vectors")
        self._remove.discard(path)
        self._streamed.pop(path, None)
        self._replace[path] = (sha256, size, chunks, np.asarray(vectors, dtype=np.float32))

    def replace_files(self, files: dict[str, tuple[str, int, int]],
                      batches: Callable[[], Iterable[tuple[list[Chunk], np.ndarray]]]) -> None:
        """Stage whole files whose chunks are read only while `commit` runs, batch by batch, so the
        writer never holds them all (shards on disk). `files`: path -> (sha256, size, number of
        chunks); `batches()` is called once and yields (chunks, (m, dim) float32 vectors), a file's
        chunks in any batches and order. A chunk delivered twice (an engine that retries a task) is
        stored once; a file whose chunks do not all arrive fails the commit. One such set per commit."""
        for path in files:
            self._replace.pop(path, None)
            self._remove.discard(path)
        self._streamed = dict(files)
        self._batches = batches

    def remove_file(self, path: str) -> None:
        self._replace.pop(path, None)
        self._streamed.pop(path, None)
        self._remove.add(path)

    @property
    def pending(self) -> int:
        return len(self._replace) + len(self._remove) + len(self._streamed)

    def commit(self) -> tuple[int, int]:
        """Apply staged changes; returns (chunks added, chunks removed)."""
        if not self.pending:
            return 0, 0
        coll, db = self.coll, self.coll.db
        added = 0
        removed_ids: list[int] = []
        touched = sorted(self._remove | set(self._replace) | set(self._streamed))

        def apply() -> Index:
            nonlocal added
            for path in touched:
                removed_ids.extend(r[0] for r in db.execute("SELECT vid FROM chunks WHERE path = ?", (path,)))
                db.execute("DELETE FROM chunks WHERE path = ?", (path,))
                db.execute("DELETE FROM files WHERE path = ?", (path,))
            # AUTOINCREMENT: every row inserted below gets a vid above every row left.
            (last_kept,) = db.execute("SELECT COALESCE(MAX(vid), 0) FROM chunks").fetchone()
            for path, (sha, size, chunks, vectors) in self._replace.items():
                for chunk, vector in zip(chunks, vectors):
                    _insert_chunk(db, "INSERT", path, chunk, vector)
                _insert_file(db, path, sha, size, len(chunks), self.parsed_with)
                added += len(chunks)
            if self._streamed:
                arrived = dict.fromkeys(self._streamed, 0)
                for chunks, vectors in self._batches():
                    for chunk, vector in zip(chunks, vectors, strict=True):
                        if chunk.source not in arrived:
                            raise ValueError(f"a chunk of {chunk.source!r}, a file that was not staged")
                        arrived[chunk.source] += _insert_chunk(db, "INSERT OR IGNORE", chunk.source, chunk, vector)
                for path, (sha, size, n_chunks) in self._streamed.items():
                    if arrived[path] != n_chunks:
                        raise RuntimeError(f"{path}: {arrived[path]} of its {n_chunks} chunks arrived")
                    _insert_file(db, path, sha, size, n_chunks, self.parsed_with)
                    added += n_chunks
            total = db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
            kind = choose_kind(self.index_type, total, self.exact_threshold)
            base = coll._index_path(coll.generation)
            # An approximate index is trained and tuned for the size it was built at: past 4x that,
            # over however many commits, it is rebuilt (IVF lists and nprobe, HNSW efSearch).
            built = int(coll._meta("index_built_size") or coll.index.ntotal)
            outgrown = kind != "flat" and total > 4 * built
            if kind != coll.index.kind or outgrown or not base.exists():
                # Rebuilt from the stored vectors (the transaction's own changes included):
                # a new type, an approximate index that outgrew its tuning, or the first commit.
                coll._set_meta("index_built_size", str(total))
                return coll._rebuild(kind)
            index = load_index(base)  # a copy: the live index stays as it was if this fails
            index.remove(np.array(removed_ids, dtype=np.int64))
            for ids, vectors in coll._vectors_after(last_kept):
                index.add(ids, vectors)
            return index

        self._new_generation(apply, touched)
        self._replace.clear()
        self._remove.clear()
        self._streamed, self._batches = {}, lambda: ()
        return added, len(removed_ids)

    def rebuild_index(self) -> int:
        """A new generation whose index is rebuilt from the vectors stored in SQLite; returns its size."""
        coll = self.coll

        def apply() -> Index:
            total = coll.db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
            coll._set_meta("index_built_size", str(total))
            return coll._rebuild(choose_kind(self.index_type, total, self.exact_threshold))

        return self._new_generation(apply, None).ntotal

    def reembed(self, embed: Callable[[list[str]], np.ndarray], meta: dict[str, str], batch: int = 256,
                progress: Callable[[int, int], None] = lambda done, total: None) -> int:
        """Every stored chunk's vector replaced by `embed` of its indexed text (heading and text),
        `meta` recorded and the index rebuilt, in one new generation: until it commits, readers see
        the old vectors, and a crash leaves them. Returns the number of chunks re-embedded."""
        from rag.chunking import indexed_text

        coll, db = self.coll, self.coll.db

        def apply() -> Index:
            rows = db.execute("SELECT vid, text, heading FROM chunks ORDER BY vid").fetchall()
            for at in range(0, len(rows), batch):
                part = rows[at:at + batch]
                vectors = np.asarray(embed([indexed_text(heading, text) for _, text, heading in part]), np.float32)
                if vectors.shape != (len(part), coll.dim):
                    raise ValueError(f"expected {len(part)} vectors of {coll.dim} dimensions, got {vectors.shape}")
                db.executemany("UPDATE chunks SET vector = ? WHERE vid = ?",
                               [(vector.tobytes(), vid) for (vid, _, _), vector in zip(part, vectors)])
                progress(at + len(part), len(rows))
            for key, value in meta.items():
                coll._set_meta(key, value)
            coll._set_meta("index_built_size", str(len(rows)))
            return coll._rebuild(choose_kind(self.index_type, len(rows), self.exact_threshold))

        return self._new_generation(apply, None).ntotal

    def _new_generation(self, apply: Callable[[], Index], paths: Iterable[str] | None) -> Index:
        """Run `apply` (SQL changes, then the index that matches them) and recompute the section
        vectors of the files at `paths` (None: all) in one transaction; the index
        file and the BM25 folder of the next generation (built from the chunk texts as the
        transaction sees them) are written durably before the transaction moves the generation."""
        from rag.bm25 import BM25Index, remove_tree

        coll, db = self.coll, self.coll.db
        new_generation = coll.generation + 1
        new_path, new_bm25 = coll._index_path(new_generation), coll._bm25_path(new_generation)
        try:
            with coll._transaction():
                index = apply()
                coll._update_sections(paths)
                total = db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
                if index.ntotal != total:
                    raise RuntimeError(f"index holds {index.ntotal} vectors but the store {total} chunks")
                index.save(new_path)  # durable before the generation moves
                BM25Index.build(*coll.all_texts()).save(new_bm25)
                coll._set_meta("generation", str(new_generation))
                coll._set_meta("index_type", index.kind)
        except BaseException:
            new_path.unlink(missing_ok=True)
            remove_tree(new_bm25)
            remove_tree(new_bm25.with_name(new_bm25.name + ".tmp"))
            raise
        old, old_bm25 = coll._index_path(coll.generation), coll._bm25_path(coll.generation)
        coll._index, coll.generation = index, new_generation
        old.unlink(missing_ok=True)
        remove_tree(old_bm25)
        return index


def _normalised(vector: np.ndarray) -> np.ndarray:
    """The direction of a sum of vectors (that of their mean), as float32 of length 1."""
    vector = np.asarray(vector, dtype=np.float32)
    return vector / max(float(np.linalg.norm(vector)), 1e-12)


def _insert_chunk(db: sqlite3.Connection, verb: str, path: str, chunk: Chunk, vector: np.ndarray) -> int:
    """Insert one chunk row; returns 1, or 0 when `verb` is INSERT OR IGNORE and the id was there."""
    cur = db.execute(
        f'{verb} INTO chunks(id, path, page, start, "end", text, vector, heading) VALUES (?,?,?,?,?,?,?,?)',
        (chunk.id, path, chunk.page, chunk.start, chunk.end, chunk.text,
         np.asarray(vector, dtype=np.float32).tobytes(), chunk.heading),
    )
    return cur.rowcount


def _insert_file(db: sqlite3.Connection, path: str, sha256: str, size: int, n_chunks: int, parsed_with: str) -> None:
    db.execute("INSERT INTO files(path, sha256, size, n_chunks, ingested_at, parsed_with) VALUES (?,?,?,?,?,?)",
               (path, sha256, size, n_chunks, time.time(), parsed_with))


def adapted_folder(collection_folder: Path, model: str) -> Path | None:
    """The folder of the adapted model `model` inside a collection, or None when `model` is not one."""
    if ADAPTED_MARK not in model:
        return None
    return Path(collection_folder) / f"{ADAPTED_PREFIX}{model.split(ADAPTED_MARK, 1)[1]}"


def base_of(model: str) -> str:
    """The base model an adapted model `model` was made from (`model` itself when it is not one)."""
    return model.split(ADAPTED_MARK, 1)[0]


def recorded_dtype(folder: Path) -> str | None:
    """`Collection.embedding_dtype` of the collection in `folder`, read without loading its index;
    None when there is no readable collection there (opening it will say why)."""
    return _read_recorded(folder, _embedding_dtype)


def recorded_model(folder: Path) -> str | None:
    """`Collection.model` of the collection in `folder`, read without loading its index; None when
    there is no readable collection there."""
    def model(db: sqlite3.Connection) -> str | None:
        row = db.execute("SELECT value FROM meta WHERE key = 'model'").fetchone()
        return row[0] if row else None

    return _read_recorded(folder, model)


def _read_recorded(folder: Path, read: Callable[[sqlite3.Connection], str | None]) -> str | None:
    db_path = Path(folder) / DB_NAME
    if not db_path.is_file():
        return None
    try:
        db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
        try:
            return read(db)
        finally:
            db.close()
    except sqlite3.DatabaseError:
        return None


def _embedding_dtype(db: sqlite3.Connection) -> str | None:
    """The recorded precision; a collection made before it was recorded holds float32 vectors, an
    empty one none."""
    row = db.execute("SELECT value FROM meta WHERE key = 'embedding_dtype'").fetchone()
    return row[0] if row else ("float32" if db.execute("SELECT 1 FROM chunks LIMIT 1").fetchone() else None)


def list_collections(home: Path) -> list[CollectionInfo]:
    """Every collection under `home`; a damaged one is listed with the reason and never hides the others."""
    infos = []
    for folder in sorted(Path(home).glob(f"*/{DB_NAME}")):
        try:
            coll = Collection.open(folder.parent)
        except CollectionError as exc:
            infos.append(CollectionInfo(folder.parent.name, str(folder.parent), 0, 0, "", "", -1, damaged=str(exc)))
            continue
        try:
            infos.append(coll.info())
        finally:
            coll.close()
    return infos


def _create_database(db_path: Path, model: str, dim: int) -> None:
    """Write a complete, empty collection database beside `db_path` and rename it into place, so a
    kill at any moment leaves either no collection or a whole one, never an empty SQLite file."""
    db_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = db_path.with_name(f"{DB_NAME}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    db = sqlite3.connect(tmp, isolation_level=None)
    try:
        db.executescript(SCHEMA)
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO meta(key, value) VALUES (?, ?)",
            [("model", model), ("dim", str(dim)), ("generation", "0"), ("index_type", "flat"),
             ("created_at", str(time.time()))],
        )
        db.execute("COMMIT")
    finally:
        db.close()
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    try:
        os.link(tmp, db_path)  # atomic and never replaces: if another process created it first, theirs stands
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(db_path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
