"""Uploads: store files a user uploads (in the UI) inside a collection, under safe names.

A name is reduced to its last path component, stripped of leading dots and characters outside a
plain set, so nothing lands outside `<collection>/uploads/`. It does not parse or ingest.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Iterable

from rag.loading import SUPPORTED_SUFFIXES

UPLOAD_DIR = "uploads"


def safe_upload_name(name: str) -> str:
    """'../../etc/passwd.txt' -> 'passwd.txt'; 'C:\\x\\a b.pdf' -> 'a_b.pdf'. Raises ValueError if nothing is left."""
    base = PureWindowsPath(PurePosixPath(name).name).name  # drop folders in either convention
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", base).lstrip("._")
    if not base or not Path(base).stem:
        raise ValueError(f"upload name {name!r} is not usable as a file name")
    return base[:200]


def save_uploads(collection_dir: Path, files: Iterable[tuple[str, bytes]]) -> tuple[list[Path], list[str]]:
    """Write each (name, content) under <collection_dir>/uploads; returns saved paths and one-line errors."""
    folder = Path(collection_dir) / UPLOAD_DIR
    folder.mkdir(parents=True, exist_ok=True)
    saved: list[Path] = []
    errors: list[str] = []
    for name, content in files:
        try:
            safe = safe_upload_name(name)
        except ValueError as exc:
            errors.append(str(exc))
            continue
        if Path(safe).suffix.lower() not in SUPPORTED_SUFFIXES:
            errors.append(f"{name}: unsupported file type {Path(safe).suffix or '(none)'!r}; "
                          f"supported: {', '.join(sorted(SUPPORTED_SUFFIXES))}")
            continue
        target = folder / safe
        assert target.resolve().parent == folder.resolve()  # cannot fail after sanitising; kept as a guard
        target.write_bytes(content)
        saved.append(target)
    return saved, errors
