"""Loading: turn one file into text pages (PDF, plain text, Markdown, HTML).

Decodes unknown encodings, repairs mojibake, and detects PDF extraction failures (pypdf dropping
inter-word spaces) by falling back to pypdfium2. It does not chunk, embed or store anything.
"""

from __future__ import annotations

import glob
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import ftfy
from charset_normalizer import from_bytes

PDF_SUFFIXES = {".pdf"}
TEXT_SUFFIXES = {".txt", ".text", ".md", ".markdown", ".rst"}
HTML_SUFFIXES = {".html", ".htm", ".xhtml"}
SUPPORTED_SUFFIXES = PDF_SUFFIXES | TEXT_SUFFIXES | HTML_SUFFIXES

# Runs of Thai characters inside mostly-Latin text: UTF-8 bytes that were once decoded as
# TIS-620/ISO-8859-11, whose undefined bytes (0x80-0x9F) were dropped on the way. ftfy cannot undo
# a lossy decode, so those runs are re-encoded and whatever still forms valid UTF-8 is kept.
_THAI_RUN = re.compile(r"[\u0e00-\u0e7f]+")


class LoadError(Exception):
    """A file that cannot be turned into text; the message names the file and the reason."""

    def __init__(self, path: Path | str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


@dataclass
class Page:
    text: str
    page: int | None  # 1-based page number for PDFs, None for single-page formats


@dataclass
class Document:
    path: Path
    pages: list[Page]
    warnings: list[str] = field(default_factory=list)


def discover(paths: Iterable[str | Path]) -> tuple[list[Path], list[LoadError]]:
    """Expand files, folders (recursively) and glob patterns into supported files.

    Inside folders, unsupported files are ignored; a path the user named explicitly that is missing
    or unsupported is an error.
    """
    found: dict[Path, None] = {}
    errors: list[LoadError] = []
    for raw in paths:
        raw = str(raw)
        matches = [Path(m) for m in sorted(glob.glob(raw, recursive=True))] if glob.has_magic(raw) else [Path(raw)]
        if not matches:
            errors.append(LoadError(raw, "no file matches this pattern"))
        for path in matches:
            if path.is_dir():
                for child in sorted(path.rglob("*")):
                    if child.is_file() and child.suffix.lower() in SUPPORTED_SUFFIXES and not _hidden(child, path):
                        found[child.resolve()] = None
            elif not path.exists():
                errors.append(LoadError(path, "no such file or folder"))
            elif path.suffix.lower() not in SUPPORTED_SUFFIXES:
                errors.append(
                    LoadError(path, f"unsupported file type {path.suffix or '(none)'!r}; "
                              f"supported: {', '.join(sorted(SUPPORTED_SUFFIXES))}")
                )
            else:
                found[path.resolve()] = None
    return list(found), errors


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def load(path: Path) -> Document:
    """Read one supported file into pages of text; raise LoadError naming the file on failure."""
    suffix = path.suffix.lower()
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise LoadError(path, f"cannot read: {exc.strerror or exc}") from None
    if not data.strip():
        raise LoadError(path, "empty file")
    if suffix in PDF_SUFFIXES:
        doc = _load_pdf(path, data)
    else:
        text, warnings = decode_text(path, data)
        if suffix in HTML_SUFFIXES:
            from inscriptis import get_text

            text = get_text(text)
        doc = Document(path, [Page(text, None)], warnings)
    if not any(p.text.strip() for p in doc.pages):
        raise LoadError(path, "no text found in file")
    return doc


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
    letters = sum(ch.isalpha() for ch in fixed) or 1
    if thai and thai / letters < 0.3:  # a real Thai document is left alone
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
    import io

    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise LoadError(path, "encrypted PDF (a password is required)")
        texts = [page.extract_text() or "" for page in reader.pages]
    except LoadError:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, OSError) as exc:
        raise LoadError(path, f"not a readable PDF ({type(exc).__name__}: {exc})") from None
    except Exception as exc:  # pypdf raises many kinds on damaged files; all mean the same here
        if "decrypt" in str(exc).lower() or "crypt" in type(exc).__name__.lower():
            raise LoadError(path, "encrypted PDF (cannot be decrypted)") from None
        raise LoadError(path, f"not a readable PDF ({type(exc).__name__}: {exc})") from None
    warnings: list[str] = []
    bad = [i for i, t in enumerate(texts) if extraction_failed(t)]
    if bad:
        fallback = _pdfium_pages(data)
        for i in bad:
            if i < len(fallback) and not extraction_failed(fallback[i]):
                texts[i] = fallback[i]
        warnings.append(f"pypdf extraction looked broken on {len(bad)} page(s); re-extracted with pypdfium2")
    pages = [Page(ftfy.fix_encoding(t), i + 1) for i, t in enumerate(texts)]
    return Document(path, pages, warnings)


def extraction_failed(text: str) -> bool:
    """True when a page's text is empty or has lost its inter-word spaces ("whatisadebianpackage")."""
    stripped = text.strip()
    if not stripped:
        return True
    words = stripped.split()
    letters = sum(ch.isalpha() for ch in stripped)
    # English prose averages ~5 letters a word; glued text shows words of dozens of letters.
    return letters >= 200 and letters / len(words) > 15


def _pdfium_pages(data: bytes) -> list[str]:
    import pypdfium2 as pdfium

    try:
        pdf = pdfium.PdfDocument(data)
    except pdfium.PdfiumError:
        return []
    try:
        return [pdf[i].get_textpage().get_text_range() for i in range(len(pdf))]
    finally:
        pdf.close()
