"""Loading: turn one file into text pages (PDF, plain text, Markdown, HTML).

Decodes unknown encodings and repairs mojibake; PDF text and outlines come from rag/pdf.py. It does
not chunk, embed or store anything.
"""

from __future__ import annotations

import glob
import os
import re
import stat
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

import ftfy
from charset_normalizer import from_bytes

from rag.errors import RagError
from rag.headings import Heading, drop_running_headers, locate, markdown_headings, text_headings
from rag.pdf import PdfError, extraction_failed, read_pdf  # noqa: F401  (extraction_failed: re-exported)

PDF_SUFFIXES = {".pdf"}
MARKDOWN_SUFFIXES = {".md", ".markdown"}
TEXT_SUFFIXES = {".txt", ".text", ".rst"} | MARKDOWN_SUFFIXES
HTML_SUFFIXES = {".html", ".htm", ".xhtml"}
SUPPORTED_SUFFIXES = PDF_SUFFIXES | TEXT_SUFFIXES | HTML_SUFFIXES

# Runs of Thai characters inside mostly-Latin text: UTF-8 bytes that were once decoded as
# TIS-620/ISO-8859-11, whose undefined bytes (0x80-0x9F) were dropped on the way. ftfy cannot undo
# a lossy decode, so those runs are re-encoded and whatever still forms valid UTF-8 is kept.
_THAI_RUN = re.compile(r"[\u0e00-\u0e7f]+")


class LoadError(RagError):
    """A file that cannot be turned into text; the message names the file and the reason."""

    def __init__(self, path: Path | str, reason: str):
        super().__init__(f"{shown(path)}: {reason}")
        self.path = str(path)
        self.reason = reason


def shown(path: Path | str) -> str:
    """A path as it appears in a one-line message: quoted and escaped when it holds a newline or
    another unprintable character, so a file name can never split or forge a message line."""
    text = str(path)
    return text if text.isprintable() else repr(text)


@dataclass
class Page:
    text: str
    page: int | None  # 1-based page number for PDFs, None for single-page formats
    sections: list[tuple[int, str]] = field(default_factory=list)  # PDF section titles starting here: (level, title)
    headings: list[Heading] = field(default_factory=list)  # where sections start in `text` (rag/headings.py)


@dataclass
class Document:
    path: Path
    pages: list[Page]
    warnings: list[str] = field(default_factory=list)


@dataclass
class Discovered:
    files: list[Path]  # supported regular files, resolved, each once
    errors: list[LoadError]  # paths the user named that cannot be ingested
    skipped: list[tuple[Path, str]]  # (path, reason): files inside folders that were passed over

    def skipped_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for _, reason in self.skipped:
            counts[reason] = counts.get(reason, 0) + 1
        return counts


def discover(paths: Iterable[str | Path]) -> Discovered:
    """Expand files, folders (recursively, following links once) and glob patterns into supported files.

    A path the user named (or a glob matched) that is missing, unsupported or not a regular file is
    an error; inside folders such files are skipped and counted by reason, as are hidden files and
    symbolic-link loops.
    """
    found: dict[Path, None] = {}
    errors: list[LoadError] = []
    skipped: list[tuple[Path, str]] = []
    for raw in paths:
        raw = str(raw)
        matches = [Path(m) for m in sorted(glob.glob(raw, recursive=True))] if glob.has_magic(raw) else [Path(raw)]
        if not matches:
            errors.append(LoadError(raw, "no file matches this pattern"))
        for path in matches:
            if path.is_dir():
                for child, reason in _walk(path):
                    if reason:
                        skipped.append((child, reason))
                    else:
                        found[child.resolve()] = None
                continue
            reason = _unusable(path)
            if reason:
                errors.append(LoadError(path, reason))
            else:
                found[path.resolve()] = None
    return Discovered(list(found), errors, skipped)


def _unusable(path: Path) -> str:
    """Why a file cannot be ingested ("" when it can): missing, not a regular file, unsupported type."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "broken symbolic link" if path.is_symlink() else "no such file or folder"
    except OSError as exc:
        return f"cannot read: {exc.strerror or exc}"
    if not stat.S_ISREG(mode):
        return "not a regular file (a FIFO, device or socket); only regular files are read"
    if path.suffix.lower() not in SUPPORTED_SUFFIXES:
        return (f"unsupported file type {path.suffix or '(none)'!r}; "
                f"supported: {', '.join(sorted(SUPPORTED_SUFFIXES))}")
    return ""


def _walk(root: Path) -> Iterator[tuple[Path, str]]:
    """(file, "") for each supported file under root, (path, reason) for each one passed over.
    Linked folders are followed, but a folder already visited (a link loop) is not entered twice."""
    seen: set[tuple[int, int]] = set()
    for folder, dirs, names in os.walk(root, followlinks=True):
        st = os.stat(folder)
        if (st.st_dev, st.st_ino) in seen:
            dirs[:] = []
            yield Path(folder), "symbolic-link loop (folder already visited)"
            continue
        seen.add((st.st_dev, st.st_ino))
        dirs.sort()
        for name in [d for d in dirs if d.startswith(".")]:
            dirs.remove(name)
            yield Path(folder) / name, "hidden"
        for name in sorted(names):
            path = Path(folder) / name
            reason = "hidden" if name.startswith(".") else _unusable(path)
            if reason.startswith("unsupported file type"):
                reason = f"unsupported file type {path.suffix.lower() or '(none)'!r}"
            yield path, reason


def open_regular(path: Path) -> BinaryIO:
    """Open a file for reading only if it is a regular file: a FIFO or device (also behind a
    symbolic link) is refused without blocking, even if it replaced the file after discovery."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise LoadError(path, f"cannot read: {exc.strerror or exc}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise LoadError(path, "not a regular file (a FIFO, device or socket); only regular files are read")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def load(path: Path, max_file_mb: float | None = None) -> Document:
    """Read one supported file into pages of text; raise LoadError naming the file on failure,
    also when it is larger than `max_file_mb` (checked before it is read; None: no limit)."""
    suffix = path.suffix.lower()
    try:
        with open_regular(path) as fh:
            check_size(path, os.fstat(fh.fileno()).st_size, max_file_mb)
            data = fh.read()
    except OSError as exc:
        raise LoadError(path, f"cannot read: {exc.strerror or exc}") from None
    if not data.strip():
        raise LoadError(path, "empty file")
    if suffix in PDF_SUFFIXES:
        doc = _load_pdf(path, data)
        # The outline (or type size) is taken at its word for the levels it has: numbered lines only add
        # deeper ones, such as the subsections of an outline that stops at sections. Numbered lines at its
        # levels are its own titles again, or list items ("1. If the second argument is ...").
        covered = max((level for page in doc.pages for level, _ in page.sections), default=0)
        numbered = drop_running_headers([text_headings(page.text) for page in doc.pages])
        for page, lines in zip(doc.pages, numbered):
            page.headings = _merge(locate(page.text, page.sections), [h for h in lines if h.level > covered])
    else:
        text, warnings = decode_text(path, data)
        if suffix in HTML_SUFFIXES:
            from rag.html_text import html_headings, html_to_text

            titles = html_headings(text)
            text, notes = html_to_text(text)
            warnings += notes
            headings = locate(text, titles)
        elif suffix in MARKDOWN_SUFFIXES:
            headings = markdown_headings(text)
        else:
            headings = text_headings(text)
        doc = Document(path, [Page(text, None, headings=headings)], warnings)
    if not any(p.text.strip() for p in doc.pages):
        raise LoadError(path, "no text found in file")
    return doc


def check_size(path: Path, size: int, max_file_mb: float | None) -> None:
    """Refuse a file of `size` bytes over the `max_file_mb` setting, saying how to raise it."""
    if max_file_mb is not None and size > max_file_mb * 2**20:
        mb = size / 2**20
        shown_mb = f"{mb:.1f}" if mb >= 1 else f"{mb:.2g}"
        raise LoadError(path, f"{shown_mb} MB is over max_file_mb ({max_file_mb:g}); "
                              "raise it in rag.toml or RAG_MAX_FILE_MB")


def _merge(first: list[Heading], second: list[Heading]) -> list[Heading]:
    """Both lists in page order; a heading of `second` at an offset `first` already has is dropped."""
    taken = {h.offset for h in first}
    return sorted(first + [h for h in second if h.offset not in taken], key=lambda h: h.offset)


def decode_text(path: Path, data: bytes) -> tuple[str, list[str]]:
    """Bytes to clean text: UTF-8 (tolerating a few bad bytes), else the detected encoding; mojibake repaired."""
    warnings: list[str] = []
    if b"\x00" in data[:8192] and not data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise LoadError(path, "binary data, not text (NUL bytes found)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("utf-8", errors="replace")
        bad = text.count("\ufffd")
        if bad > max(8, len(text) // 200):  # more than a sprinkle: probably another encoding
            best = from_bytes(data).best()
            if best is None:
                raise LoadError(path, "binary data, not text (no text encoding fits)") from None
            text = str(best)
            warnings.append(f"decoded as {best.encoding} (not UTF-8)")
        else:
            warnings.append(f"{bad} invalid UTF-8 byte sequence(s) replaced")
    if _looks_binary(text):
        raise LoadError(path, "binary data, not text (mostly control characters)")
    repaired, notes = repair_mojibake(text)
    warnings.extend(notes)
    return repaired, warnings


def _looks_binary(text: str) -> bool:
    sample = text[:4096]
    control = sum(1 for ch in sample if ord(ch) < 32 and ch not in "\t\n\r\f")
    return control > len(sample) * 0.05


def repair_mojibake(text: str) -> tuple[str, list[str]]:
    """Repair mojibake with ftfy, then clean lossy UTF-8-as-Thai runs ftfy cannot undo."""
    notes: list[str] = []
    fixed = ftfy.fix_encoding(text)  # only undoes wrong decodes; quotes and ligatures stay as written
    if fixed != text:
        notes.append("mojibake repaired by ftfy")
    fixed = unicodedata.normalize("NFC", fixed)
    thai = sum(len(m) for m in _THAI_RUN.findall(fixed))
    if thai and thai / (sum(ch.isalpha() for ch in fixed) or 1) < 0.3:  # a real Thai document is left alone
        runs = 0

        def recover(match: re.Match[str]) -> str:
            nonlocal runs
            runs += 1
            salvaged = match.group().encode("iso8859_11", errors="ignore").decode("utf-8", errors="ignore")
            return salvaged if salvaged.strip() else " "

        fixed = _THAI_RUN.sub(recover, fixed)
        fixed = re.sub(r"[ \t]{2,}", " ", fixed)
        notes.append(f"{runs} run(s) of lossy mojibake (UTF-8 read as TIS-620) cleaned")
    return fixed, notes


def _load_pdf(path: Path, data: bytes) -> Document:
    try:
        pdf = read_pdf(data)
    except PdfError as exc:  # every parser's error, from any extractor, arrives here as one line
        raise LoadError(path, str(exc)) from None
    pages = [Page(ftfy.fix_encoding(p.text), p.number, p.sections) for p in pdf.pages]
    return Document(path, pages, pdf.warnings)
