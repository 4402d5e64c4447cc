"""A scratch collection for a benchmark: a temporary folder, the documents ingested into it."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Iterable


def scratch_collection(name: str, docs: Iterable[str | Path], settings, embedder, chunker=None):
    """A new collection `name` in a temporary folder holding `docs` (files, folders or globs),
    chunked by `chunker` (default: the settings' chunker)."""
    from ingest.pipeline import ingest
    from rag.components import make_chunker
    from rag.store import Collection

    collection = Collection.open(Path(tempfile.mkdtemp()) / name, embedder.name, embedder.dim, create=True)
    ingest(list(docs), collection, embedder, chunker or make_chunker(settings, embedder), settings=settings)
    return collection
