"""The bulk ingest pipeline: walk, parse, chunk, embed, write.

Incremental: a file whose content hash is unchanged is skipped, a changed file's chunks are
replaced, and with `prune` the chunks of files that no longer exist are removed. One bad file is
reported and skipped; the rest of the batch lands, and nothing already stored is touched by it.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from rag.chunking import Chunker
from rag.embedding import Embedder
from rag.loading import LoadError, discover, load
from rag.store import Collection

COMMIT_EVERY = 32  # files per commit: a crash loses at most this much work, never stored data


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
        }

    def summary(self) -> str:
        return (
            f"collection '{self.collection}': files new {self.new}, changed {self.changed}, "
            f"unchanged {self.unchanged}, failed {self.failed}"
            + (f", pruned {self.pruned}" if self.pruned else "")
            + f"; chunks added {self.chunks_added}, removed {self.chunks_removed}; {self.seconds:.1f} s"
        )


def sha256_file(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
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
    prune: bool = False,
    index_type: str = "auto",
    exact_threshold: int = 20_000,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> IngestReport:
    """Ingest files, folders and globs into `collection`; returns what happened, file by file counted."""
    start = time.perf_counter()
    report = IngestReport(collection.name)
    files, errors = discover(paths)
    report.errors += [str(e) for e in errors]
    report.failed += len(errors)
    with collection.writer(index_type, exact_threshold) as writer:
        known = collection.file_hashes()
        for path in (progress or (lambda x: x))(files):
            key = str(path)
            try:
                sha, size = sha256_file(path)
            except OSError as exc:
                report.failed += 1
                report.errors.append(f"{path}: cannot read: {exc.strerror or exc}")
                continue
            if known.get(key) == sha:
                report.unchanged += 1
                continue
            try:
                doc = load(path)
                chunks = chunker.split(doc, key)
                if not chunks:
                    raise LoadError(path, "no text left after chunking")
                vectors = embedder.embed([c.text for c in chunks])
            except LoadError as exc:
                report.failed += 1
                report.errors.append(str(exc))
                continue
            report.warnings += [f"{path}: {w}" for w in doc.warnings]
            writer.replace_file(key, sha, size, chunks, vectors)
            if key in known:
                report.changed += 1
            else:
                report.new += 1
            if writer.pending >= COMMIT_EVERY:
                _commit(writer, report)
        if prune:
            for key in known:
                if not Path(key).exists():
                    writer.remove_file(key)
                    report.pruned += 1
        _commit(writer, report)
    report.seconds = time.perf_counter() - start
    return report


def _commit(writer, report: IngestReport) -> None:
    added, removed = writer.commit()
    report.chunks_added += added
    report.chunks_removed += removed
