"""Real text and real MiniLM vectors for the index and BM25 benchmarks: the Linux kernel's
documentation from Debian's linux-doc-6.1 (reStructuredText and plain text, 41 MB), split into
paragraph-aligned chunks of about 250-600 characters (median 300, ~80 MiniLM tokens), in a fixed order.

The package is fetched once with `apt-get download` and kept, with the vectors, under
<cache_dir>/bench/. It does not build indexes or collections.
"""

from __future__ import annotations

import gzip
import hashlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

PACKAGE = "linux-doc-6.1"
DOC_ROOT = "usr/share/doc/linux-doc-6.1/Documentation"
CHUNK_CHARS = 250


def bench_cache() -> Path:
    import os

    from rag.settings import default_cache_dir

    folder = default_cache_dir(os.environ) / "bench"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def doc_folder() -> Path:
    """The extracted Documentation/ folder, downloading and unpacking the package on first use."""
    target = bench_cache() / PACKAGE
    docs = target / DOC_ROOT
    if docs.is_dir():
        return docs
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        sys.exit(f"apt-get and dpkg-deb are needed to fetch {PACKAGE} (Debian's kernel documentation)")
    work = bench_cache()
    result = subprocess.run(["apt-get", "download", PACKAGE], cwd=work, capture_output=True, text=True,
                            check=False)
    debs = sorted(work.glob(f"{PACKAGE}_*.deb"))
    if not debs:
        sys.exit(f"apt-get download {PACKAGE} failed: {result.stderr.strip()}")
    subprocess.run(["dpkg-deb", "-x", str(debs[-1]), str(target)], check=True)
    return docs


def chunks(limit: int | None = None) -> list[str]:
    """Paragraph-aligned chunks of about CHUNK_CHARS characters, files in sorted order."""
    out: list[str] = []
    for path in sorted(doc_folder().rglob("*.gz")):
        try:
            text = gzip.decompress(path.read_bytes()).decode("utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        current = ""
        for para in re.split(r"\n\s*\n", text):
            para = " ".join(para.split())
            if len(para) < 20 or not re.search(r"[a-z]{3}", para):  # markup rules, lone symbols
                continue
            while len(para) > 2 * CHUNK_CHARS:  # very long paragraphs: cut at a space
                cut = para.rfind(" ", 0, CHUNK_CHARS) + 1 or CHUNK_CHARS
                out.append((current + " " + para[:cut]).strip())
                current, para = "", para[cut:]
            current = (current + " " + para).strip()
            if len(current) >= CHUNK_CHARS:
                out.append(current)
                current = ""
            if limit is not None and len(out) >= limit:
                return out
        if current:
            out.append(current)
    return out if limit is None else out[:limit]


def minilm_vectors(texts: list[str]) -> np.ndarray:
    """(len(texts), 384) float32, L2-normalised, by rag's SentenceTransformerEmbedder; cached by content."""
    key = hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:16]
    path = bench_cache() / f"minilm-{key}.npy"
    if path.exists():
        return np.load(path)
    from tqdm import tqdm

    from rag.embedding import SentenceTransformerEmbedder

    embedder = SentenceTransformerEmbedder()
    step = 1024
    parts = [embedder.embed(texts[at:at + step])
             for at in tqdm(range(0, len(texts), step), desc="embedding", unit_scale=step, file=sys.stderr)]
    vectors = np.concatenate(parts)
    np.save(path, vectors)
    return vectors
