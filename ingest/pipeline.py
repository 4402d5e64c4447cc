"""The bulk ingest pipeline: walk, parse, chunk, embed, write.

Incremental: a file whose content hash is unchanged is skipped (unless it was chunked by another
parser version or other chunk settings: `Chunker.signature`, stored with it), a changed file's chunks are
replaced, and with `prune` the chunks of files that no longer exist are removed. One bad file is
reported and skipped; the rest of the batch lands, and nothing else already stored is touched by
it. A stored file that changed and no longer parses (now empty, binary, damaged) loses its old
chunks: its old text must not be served as if it were current.
"""

from __future__ import annotations

import copy
import hashlib
import os
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from rag.chunking import Chunk, Chunker
from rag.embedding import Embedder
from rag.loading import Document, LoadError, discover, load, open_regular, shown
from rag.settings import Settings
from rag.store import Collection, Writer

# A commit (index file, BM25 folder, fsyncs) costs about as much as embedding a few files, so it comes
# once COMMIT_EVERY files are staged and COMMIT_SECONDS have passed since the last one: a crash loses
# at most about that much work, never stored data. A commit rebuilds BM25 from every chunk, so it
# grows with the collection (3 s at 100,000 chunks here, ~30 s at a million); the wait after one is
# stretched so that commits take at most COMMIT_SHARE of an ingest's time.
COMMIT_EVERY = 32
COMMIT_SECONDS = 10.0
COMMIT_SHARE = 0.1
EMBED_STEP = 256  # chunks per embedding call, across files; progress is reported after each
# How far the reader thread hashes and parses ahead of the embedding: up to READ_AHEAD_CHUNKS chunks
# (one file may hold more), so that the next batch is ready when the embedder wants it whether files
# are small or large, and at most READ_AHEAD_FILES files (unchanged ones carry no chunks).
READ_AHEAD_CHUNKS = 16 * EMBED_STEP  # a few MB of text; covers a commit's pause on a fast embedder
READ_AHEAD_FILES = 1024


@dataclass
class Progress:
    """Where an ingest stands; handed to the `progress` callback after each file and each
    EMBED_STEP chunks embedded."""

    files_done: int
    files_total: int
    chunks_embedded: int  # in this run, all files so far
    file: Path | None = None  # the file being embedded, None between files
    file_chunks_done: int = 0
    file_chunks_total: int = 0


@dataclass
class IngestReport:
    collection: str
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    reparsed: int = 0  # unchanged, but chunked by another parser version or other chunk settings: read again
    failed: int = 0
    pruned: int = 0
    chunks_added: int = 0
    chunks_removed: int = 0
    chunks_reused: int = 0  # of the chunks added: reparsed files' unchanged chunks, which kept their vectors
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)  # files passed over inside folders, by reason
    skipped_files: list[str] = field(default_factory=list)  # "path: reason", for --verbose

    @property
    def ingested(self) -> int:
        return self.new + self.changed + self.unchanged + self.reparsed

    def as_dict(self) -> dict:
        return {
            "collection": self.collection,
            "files": {"new": self.new, "changed": self.changed, "unchanged": self.unchanged,
                      "reparsed": self.reparsed, "failed": self.failed, "pruned": self.pruned},
            "chunks_added": self.chunks_added,
            "chunks_removed": self.chunks_removed,
            "chunks_reused": self.chunks_reused,
            "seconds": round(self.seconds, 3),
            "errors": self.errors,
            "warnings": self.warnings,
            "skipped": self.skipped,
        }

    def summary(self) -> str:
        return (
            f"collection '{self.collection}': files new {self.new}, changed {self.changed}, "
            f"unchanged {self.unchanged}, failed {self.failed}"
            + (f", reparsed {self.reparsed} (chunked by an older parser or other chunk settings; "
               f"{self.chunks_reused} unchanged chunks kept their vectors)" if self.reparsed else "")
            + (f", pruned {self.pruned}" if self.pruned else "")
            + f"; chunks added {self.chunks_added}, removed {self.chunks_removed}; {self.seconds:.1f} s"
            + ("; skipped in folders: " + ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped.items()))
               if self.skipped else "")
        )


def sha256_file(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open_regular(path) as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def ingest(
    paths: Iterable[str | Path],
    collection: Collection,
    embedder: Embedder,
    chunker: Chunker,
    *,
    settings: Settings | None = None,
    prune: bool = False,
    wait: float = 0.0,
    progress: Callable[[Progress], None] | None = None,
) -> IngestReport:
    """Ingest files, folders and globs into `collection`; returns what happened, file by file counted.
    `settings` gives the index type and its exact threshold (defaults when None); `wait`: seconds to
    queue behind another writer of the collection (0: fail at once).

    The stages overlap: a reader thread hashes, parses and chunks up to READ_AHEAD_CHUNKS chunks ahead
    while this thread embeds, and chunks are embedded EMBED_STEP at a time across files, so many small
    files still make full batches (sentence-transformers sorts each batch by length)."""
    settings = settings or Settings()
    start = time.perf_counter()
    report, files = start_report(collection.name, paths)
    notify = progress or (lambda event: None)
    if collection.embedding_dtype is None:  # a new collection takes the embedder's precision
        collection.set_meta({"embedding_dtype": embedder.dtype})
    with collection.writer(settings.index_type, settings.exact_threshold, wait=wait) as writer:
        known = collection.file_hashes(chunker.signature)  # "" for a file chunked otherwise: read again
        writer.parsed_with = chunker.signature
        batch = _Batch(embedder, writer, report, known, reuse=collection.file_vectors)
        committed, wait_s = time.monotonic(), COMMIT_SECONDS
        notify(Progress(0, len(files), 0))
        for done, item in enumerate(read_ahead(files, known, chunker, settings.max_file_mb), start=1):
            key = str(item.path)
            if settle(item.path, item.hashed, known, writer, report) is not None:
                if isinstance(item.parsed, LoadError):
                    record_failure(report, writer, key, known, str(item.parsed), parsed=True)
                else:
                    batch.add(key, item.hashed, *item.parsed)
                    while batch.full():
                        batch.embed()
                        notify(batch.progress(done - 1, len(files)))
            if writer.pending >= COMMIT_EVERY and time.monotonic() - committed >= wait_s:
                began = time.monotonic()
                commit(writer, report)  # the writer holds whole files only
                committed = time.monotonic()
                wait_s = max(COMMIT_SECONDS, (committed - began) * (1 - COMMIT_SHARE) / COMMIT_SHARE)
        while batch.files:
            batch.embed()
            notify(batch.progress(len(files), len(files)))
        notify(Progress(len(files), len(files), batch.embedded))
        report.chunks_reused = batch.reused
        if prune:
            prune_missing(writer, known, report)
        commit(writer, report)
    report.seconds = time.perf_counter() - start
    return report


@dataclass
class ReadAhead:
    """One file as the reader thread left it: its hash (or why it could not be read), and when it is
    new or changed, its document and chunks (or why it could not be parsed)."""

    path: Path
    hashed: tuple[str, int] | LoadError | OSError
    parsed: tuple[Document, list[Chunk]] | LoadError | None = None


def read_ahead(files: list[Path], known: dict[str, str], chunker: Chunker, max_file_mb: float | None = None,
               chunks: int = READ_AHEAD_CHUNKS, depth: int = READ_AHEAD_FILES) -> Iterator[ReadAhead]:
    """`files` hashed, and parsed where new or changed, in a thread that stays at most `chunks` parsed
    chunks (a file whose chunks alone are more still goes) and `depth` files ahead of the consumer; in
    order. A bug in the thread is raised here; stopping early stops it."""
    results: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    room = threading.Condition()
    ahead = [0]  # chunks parsed and not yet taken by the consumer
    # The thread's own copy: a fast tokenizer keeps its padding and truncation state between calls,
    # so chunking (token counts) beside the embedder's padded batches on one tokenizer breaks both.
    chunker = copy.deepcopy(chunker)

    def put(value) -> bool:
        while not stop.is_set():
            try:
                results.put(value, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def wait_for_room() -> None:
        with room:
            while ahead[0] >= chunks and not stop.is_set():
                room.wait(timeout=0.1)

    def work() -> None:
        try:
            _yield_to_embedding()
            for path in files:
                wait_for_room()
                try:
                    hashed: tuple[str, int] | LoadError | OSError = sha256_file(path)
                except (LoadError, OSError) as exc:
                    hashed = exc
                item = ReadAhead(path, hashed)
                if isinstance(hashed, tuple) and known.get(str(path)) != hashed[0]:
                    try:
                        item.parsed = parse_file(path, chunker, max_file_mb)
                    except LoadError as exc:
                        item.parsed = exc
                with room:
                    ahead[0] += _chunk_count(item)
                if not put(item):
                    return
            put(_DONE)
        except BaseException as exc:  # a bug: handed to the consumer, which raises it with its traceback
            put(_Failed(exc))

    thread = threading.Thread(target=work, name="ingest-reader", daemon=True)
    thread.start()
    try:
        while (item := results.get()) is not _DONE:
            if isinstance(item, _Failed):
                raise item.exc
            with room:
                ahead[0] -= _chunk_count(item)
                room.notify()
            yield item
    finally:
        stop.set()
        thread.join()


def _chunk_count(item: ReadAhead) -> int:
    return len(item.parsed[1]) if isinstance(item.parsed, tuple) else 0


_DONE = object()


def _yield_to_embedding() -> None:
    """Lower this thread's scheduling priority (Linux: per thread), so parsing takes the CPU the
    embedding's threads leave idle rather than stalling them on a machine with few cores."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (AttributeError, OSError):  # not Linux, or not allowed: parse at the same priority
        pass


@dataclass
class _Failed:
    exc: BaseException


class _Batch:
    """Chunks of one or more files waiting to be embedded; a file is staged in the writer once all
    its chunks have their vectors. A file read again only because it was chunked otherwise (its
    content unchanged: `known` says "") keeps the stored vector of every chunk whose text, place and
    heading path are unchanged (`reuse`: Collection.file_vectors); only the others are embedded."""

    def __init__(self, embedder: Embedder, writer: Writer, report: IngestReport, known: dict[str, str],
                 reuse: Callable[[str], dict[tuple[str, str], np.ndarray]] | None = None):
        self.embedder, self.writer, self.report, self.known, self.reuse = embedder, writer, report, known, reuse
        self.files: deque[_Pending] = deque()  # in file order; the first may be part-embedded
        self.waiting = 0  # chunks not yet embedded
        self.embedded = 0  # chunks embedded in this run
        self.reused = 0  # chunks whose stored vector was kept
        self.last: _Pending | None = None

    def add(self, key: str, hashed: tuple[str, int], doc: Document, chunks: list[Chunk]) -> None:
        stored = self.reuse(key) if self.reuse is not None and reread(self.known, key) else {}
        kept = {i: stored[c.id, c.heading] for i, c in enumerate(chunks) if (c.id, c.heading) in stored}
        pending = _Pending(key, hashed, doc, chunks, kept=kept, todo=[i for i in range(len(chunks)) if i not in kept])
        self.files.append(pending)
        self.waiting += len(pending.todo)
        self.reused += len(kept)
        self._stage_done()  # a file with nothing to embed is staged now, not held to the end of the run

    def full(self) -> bool:
        return self.waiting >= EMBED_STEP

    def embed(self) -> None:
        """Embed the next EMBED_STEP waiting chunks (fewer at the end), across files; stage every
        file that is then complete."""
        take, texts = [], []
        for pending in self.files:
            want = min(EMBED_STEP - len(texts), len(pending.todo) - pending.embedded)
            if want <= 0:
                continue
            texts += [pending.chunks[i].indexed for i in pending.todo[pending.embedded:pending.embedded + want]]
            take.append((pending, want))
            if len(texts) == EMBED_STEP:
                break
        vectors = self.embedder.embed(texts) if texts else None
        at = 0
        for pending, want in take:
            pending.vectors.append(vectors[at:at + want])
            pending.embedded += want
            at += want
            self.last = pending
        self.waiting -= len(texts)
        self.embedded += len(texts)
        self._stage_done()

    def _stage_done(self) -> None:
        """Stage the files at the front whose chunks all have their vectors, in file order."""
        while self.files and self.files[0].embedded == len(self.files[0].todo):
            done = self.files.popleft()
            self.writer.replace_file(done.key, *done.hashed, done.chunks, done.all_vectors())
            record_landed(self.report, done.key, self.known, done.doc.warnings)

    def progress(self, files_done: int, files_total: int) -> Progress:
        last = self.last
        if last is None:
            return Progress(files_done, files_total, self.embedded)
        return Progress(files_done, files_total, self.embedded, Path(last.key), last.embedded + len(last.kept),
                        len(last.chunks))


@dataclass
class _Pending:
    key: str
    hashed: tuple[str, int]
    doc: Document
    chunks: list[Chunk]
    kept: dict[int, np.ndarray] = field(default_factory=dict)  # chunk index -> its stored vector
    todo: list[int] = field(default_factory=list)  # the indexes of the chunks to embed, in order
    embedded: int = 0  # of `todo`
    vectors: list[np.ndarray] = field(default_factory=list)  # of `todo`, in blocks

    def all_vectors(self) -> np.ndarray:
        """(len(chunks), dim) float32: the stored ones where kept, the new ones elsewhere."""
        if not self.kept:
            return np.concatenate(self.vectors)
        out = np.empty((len(self.chunks), len(next(iter(self.kept.values())))), dtype=np.float32)
        for i, vector in self.kept.items():
            out[i] = vector
        if self.todo:
            out[self.todo] = np.concatenate(self.vectors)
        return out


# ---- the steps every engine shares (ingest/ray_engine.py runs the same ones on a cluster) ----------


def start_report(name: str, paths: Iterable[str | Path]) -> tuple[IngestReport, list[Path]]:
    """The report of an ingest into collection `name`, with what discovery found wrong or passed
    over, and the supported files to look at."""
    report = IngestReport(name)
    found = discover(paths)
    report.errors += [str(e) for e in found.errors]
    report.failed += len(found.errors)
    report.skipped = found.skipped_counts()
    report.skipped_files = [f"{shown(path)}: {reason}" for path, reason in found.skipped]
    return report, found.files


def check_file(path: Path, known: dict[str, str], writer: Writer, report: IngestReport) -> tuple[str, int] | None:
    """Hash `path` and decide (`settle`)."""
    try:
        hashed: tuple[str, int] | LoadError | OSError = sha256_file(path)
    except (LoadError, OSError) as exc:
        hashed = exc
    return settle(path, hashed, known, writer, report)


def settle(path: Path, hashed: tuple[str, int] | LoadError | OSError, known: dict[str, str], writer: Writer,
           report: IngestReport) -> tuple[str, int] | None:
    """(sha256, size) when `path` is new or changed and must be parsed; None when it is unchanged or
    could not be read (`hashed` is then the error), which is counted in `report` (and a stored file
    that can no longer be read loses its old chunks)."""
    key = str(path)
    if isinstance(hashed, LoadError):  # no longer a regular file
        record_failure(report, writer, key, known, str(hashed))
        return None
    if isinstance(hashed, OSError):
        report.failed += 1
        report.errors.append(f"{shown(path)}: cannot read: {hashed.strerror or hashed}")
        return None
    if known.get(key) == hashed[0]:
        report.unchanged += 1
        return None
    return hashed


def parse_file(path: Path, chunker: Chunker, max_file_mb: float | None = None) -> tuple[Document, list[Chunk]]:
    """Read, parse and chunk one file; raises LoadError (one line) when it holds no usable text or
    is over `max_file_mb` (None: no limit)."""
    doc = load(path, max_file_mb)
    chunks = chunker.split(doc, str(path))
    if not chunks:
        raise LoadError(path, "no text left after chunking")
    return doc, chunks


def reread(known: dict[str, str], key: str) -> bool:
    """Whether a stored file is read again only because it was chunked otherwise: its content is as
    stored, its chunking is not (`Collection.file_hashes` gives it the hash "")."""
    return known.get(key) == ""


def record_failure(report: IngestReport, writer: Writer, key: str, known: dict[str, str], error: str,
                   parsed: bool = False) -> None:
    """Count a file that failed, with its one error line. A stored file that changed and broke: its
    old text is no longer what the file says, so it must not be served as current. `parsed`: it
    failed to parse, after hashing; an unchanged file read again only for a new parser or chunk
    settings (Collection.file_hashes) then keeps its chunks, which still say what it says."""
    report.failed += 1
    if parsed and reread(known, key):
        error += "; its chunks from the earlier reading were kept"
    elif key in known:
        writer.remove_file(key)
        error += "; its previous chunks were removed"
    report.errors.append(error)


def record_landed(report: IngestReport, key: str, known: dict[str, str], warnings: list[str]) -> None:
    """Count a file whose chunks were staged in the writer."""
    report.warnings += [f"{shown(key)}: {w}" for w in warnings]
    if reread(known, key):
        report.reparsed += 1
    elif key in known:
        report.changed += 1
    else:
        report.new += 1


def prune_missing(writer: Writer, known: dict[str, str], report: IngestReport) -> None:
    """Stage the removal of every stored file that no longer exists."""
    for key in known:
        if not Path(key).exists():
            writer.remove_file(key)
            report.pruned += 1


def commit(writer: Writer, report: IngestReport) -> None:
    added, removed = writer.commit()
    report.chunks_added += added
    report.chunks_removed += removed


def reembed(collection: Collection, embedder: Embedder | Callable[[], Embedder], settings: Settings | None = None,
            *, wait: float = 0.0) -> dict:
    """Every stored chunk embedded again by `embedder` (e.g. in another precision, or an adapted
    model), in one new generation that also records the embedder's name and precision; files are
    not read again. `embedder` may be a function that makes it, called once the write lock is held
    (an adapted model is written into the collection's folder only then: the lock's orphan sweep
    would take it before)."""
    settings = settings or Settings()
    with collection.writer(settings.index_type, settings.exact_threshold, wait=wait) as writer:
        if callable(embedder):
            embedder = embedder()
        start = time.perf_counter()
        chunks = writer.reembed(embedder.embed, {"model": embedder.name, "embedding_dtype": embedder.dtype},
                                batch=EMBED_STEP)
    return {"collection": collection.name, "chunks": chunks, "embedding_dtype": embedder.dtype,
            "seconds": round(time.perf_counter() - start, 3)}
