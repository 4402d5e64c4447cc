"""Uploads: store files a user uploads (in the UI) inside a collection, under safe names.

A name keeps its letters in any script; it is reduced to its last path component and stripped of
control characters, leading dots and names Windows reserves, so nothing lands outside
`<collection>/uploads/`. A different document never replaces one already there: it gets a
numbered name ("notes-2.txt"); the same bytes uploaded again reuse the stored file. It does not
parse or ingest.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Iterable

from rag.errors import ConfigError
from rag.loading import SUPPORTED_SUFFIXES, shown

UPLOAD_DIR = "uploads"
MAX_NAME_BYTES = 200  # below every common file system's 255-byte limit, room left for "-NN"
# Device names Windows reserves whatever the extension (CON.txt is the console there).
_RESERVED = re.compile(r"(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?", re.IGNORECASE)


def safe_upload_name(name: str) -> str:
    """'../../etc/passwd.txt' -> 'passwd.txt'; 'C:\\x\\报告 1.pdf' -> '报告 1.pdf'. Raises ValueError if
    nothing usable is left."""
    base = PureWindowsPath(PurePosixPath(name).name).name  # drop folders in either convention
    base = unicodedata.normalize("NFC", base)
    base = "".join("_" if unicodedata.category(ch)[0] == "C" else ch for ch in base)  # controls, format chars
    base = base.strip().lstrip(".").rstrip(". ")
    if _RESERVED.fullmatch(base):
        base = f"_{base}"
    if not base or not Path(base).stem or set(Path(base).stem) <= {"_"}:
        raise ConfigError(f"upload name {name!r} is not usable as a file name")
    return _shorten(base, MAX_NAME_BYTES)


def _shorten(name: str, limit: int) -> str:
    """Cut the stem (never the extension) so the UTF-8 name fits in `limit` bytes."""
    if len(name.encode()) <= limit:
        return name
    suffix = Path(name).suffix if len(Path(name).suffix.encode()) < limit // 2 else ""
    stem = name[: len(name) - len(suffix)]
    room = limit - len(suffix.encode())
    stem = stem.encode()[:room].decode("utf-8", errors="ignore").rstrip(". ")
    return stem + suffix


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
            errors.append(f"{shown(name)}: unsupported file type {Path(safe).suffix or '(none)'!r}; "
                          f"supported: {', '.join(sorted(SUPPORTED_SUFFIXES))}")
            continue
        saved.append(_store(folder, safe, content))
    return saved, errors


def _store(folder: Path, name: str, content: bytes) -> Path:
    """Create a new file (exclusively: two uploads at once never share one); the same content
    already stored under this name or a numbered one is reused instead."""
    stem, suffix = Path(name).stem, Path(name).suffix
    for n in range(1, 10_000):
        candidate = folder / (name if n == 1 else _shorten(f"{stem}-{n}{suffix}", MAX_NAME_BYTES + 6))
        assert candidate.resolve().parent == folder.resolve()  # cannot fail after sanitising; kept as a guard
        try:
            with open(candidate, "xb") as fh:
                fh.write(content)
            return candidate
        except FileExistsError:
            if candidate.is_file() and candidate.read_bytes() == content:
                return candidate
    raise ConfigError(f"{shown(name)}: too many uploads with this name")
