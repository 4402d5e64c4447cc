"""The bulk ingest pipeline: walk, parse, chunk, embed, write.

Incremental: a file whose content hash is unchanged is skipped, a changed file's chunks are
replaced, and with `prune` the chunks of files that no longer exist are removed. One bad file is
reported and skipped; the rest of the batch lands, and nothing else already stored is touched by
it. A stored file that changed and no longer parses (now empty, binary, damaged) loses its old
chunks: its old text must not be served as if it were current.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from rag.chunking import Chunker
from rag.embedding import Embedder
from rag.loading import LoadError, discover, load, open_regular, shown
from rag.settings import Settings
from rag.store import Collection, Writer

COMMIT_EVERY = 32  # files per commit: a crash loses at most this much work, never stored data
EMBED_STEP = 256  # chunks embedded between progress reports, so a huge file shows movement


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
    failed: int = 0
    pruned: int = 0
    chunks_added: int = 0
    chunks_removed: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)  # files passed over inside folders, by reason
    skipped_files: list[str] = field(default_factory=list)  # "path: reason", for --verbose

    @property
    def ingested(self) -> int:
        return self.new + self.changed + self.unchanged

    def as_dict(self) -> dict:
        return {
            "collection": self.collection,
            "files": {"new": self.new, "changed": self.changed, "unchanged": self.unchanged,
                      "failed": self.failed, "pruned": self.pruned},
            "chunks_added": self.chunks_added,
            "chunks_removed": self.chunks_removed,
            "seconds": round(self.seconds, 3),
            "errors": self.errors,
            "warnings": self.warnings,
            "skipped": self.skipped,
        }

    def summary(self) -> str:
        return (
            f"collection '{self.collection}': files new {self.new}, changed {self.changed}, "
            f"unchanged {self.unchanged}, failed {self.failed}"
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
    queue behind another writer of the collection (0: fail at once)."""
    settings = settings or Settings()
    start = time.perf_counter()
    report = IngestReport(collection.name)
    found = discover(paths)
    report.errors += [str(e) for e in found.errors]
    report.failed += len(found.errors)
    report.skipped = found.skipped_counts()
    report.skipped_files = [f"{shown(path)}: {reason}" for path, reason in found.skipped]
    files = found.files
    notify = progress or (lambda event: None)
    embedded = 0
    with collection.writer(settings.index_type, settings.exact_threshold, wait=wait) as writer:
        known = collection.file_hashes()
        for done, path in enumerate(files):
            notify(Progress(done, len(files), embedded))
            key = str(path)
            try:
                sha, size = sha256_file(path)
            except LoadError as exc:  # no longer a regular file
                report.failed += 1
                report.errors.append(str(exc) + _drop_old(writer, key, known))
                continue
            except OSError as exc:
                report.failed += 1
                report.errors.append(f"{shown(path)}: cannot read: {exc.strerror or exc}")
                continue
            if known.get(key) == sha:
                report.unchanged += 1
                continue
            try:
                doc = load(path)
                chunks = chunker.split(doc, key)
                if not chunks:
                    raise LoadError(path, "no text left after chunking")
                vectors = []
                for at in range(0, len(chunks), EMBED_STEP):
                    vectors.append(embedder.embed([c.indexed for c in chunks[at:at + EMBED_STEP]]))
                    embedded += len(vectors[-1])
                    notify(Progress(done, len(files), embedded, path, min(at + EMBED_STEP, len(chunks)), len(chunks)))
            except LoadError as exc:
                report.failed += 1
                report.errors.append(str(exc) + _drop_old(writer, key, known))
                continue
            report.warnings += [f"{shown(path)}: {w}" for w in doc.warnings]
            writer.replace_file(key, sha, size, chunks, np.concatenate(vectors))
            if key in known:
                report.changed += 1
            else:
                report.new += 1
            if writer.pending >= COMMIT_EVERY:
                _commit(writer, report)
        notify(Progress(len(files), len(files), embedded))
        if prune:
            for key in known:
                if not Path(key).exists():
                    writer.remove_file(key)
                    report.pruned += 1
        _commit(writer, report)
    report.seconds = time.perf_counter() - start
    return report


def _drop_old(writer: Writer, key: str, known: dict[str, str]) -> str:
    """A stored file that changed and broke: its old text is no longer what the file says, so it
    must not be served as current. Returns the note for its error line."""
    if key not in known:
        return ""
    writer.remove_file(key)
    return "; its previous chunks were removed"


def _commit(writer: Writer, report: IngestReport) -> None:
    added, removed = writer.commit()
    report.chunks_added += added
    report.chunks_removed += removed
