"""PDF text quality: reference words kept and words glued, the old extractor against rag/pdf.py.

For each PDF below (Debian documentation packages, one producer each), side by side in one run:
- old: pypdf, with pages whose average word ran past 15 letters re-read by pypdfium2's
  get_text_range (rag/loading.py before issue 10);
- new: `rag.loading.load`, which calls `rag.pdf.read_pdf`.
The reference is poppler's pdftotext. Words are NFKC-folded and stripped of leading and trailing
punctuation. Word recall: the share of reference words (counted with repeats) found in the text of
the chunks (rag.chunking.Chunker over the MiniLM tokenizer, the union of chunk spans per page).
Glued-word rate: words of more than 25 letters that the reference does not have, over all words.
Seconds per page: the median of --repeats interleaved runs, extraction only.
Headings: the headings a PDF without an outline would get from type size, scored against the
outline (`type_size_headings`), and the chunks whose heading path holds outline titles only
(`heading_paths`: the numbered lines of the text filtered as the product does, and unfiltered).

    python bench/pdf_text.py [--cache ~/.cache/ragvsft/bench-pdfs] [--repeats 3] [--out bench/results/pdf_text.json]

Missing PDFs are fetched into the cache with `apt-get download` and `dpkg-deb -x` (Debian; run
`apt-get update` once first); pdftotext comes from poppler-utils. Writes JSON; docs/BENCHMARKS.md
summarises it.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import importlib.metadata
import io
import json
import logging
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
import unicodedata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# (package, glob of the PDF inside it, producer as the PDF states it). Never debian-faq or perl-doc:
# those are kept for independent checks.
PDFS = [
    ("why3-doc-pdf", "usr/share/doc/why3-doc-pdf/manual.pdf", "Sphinx LaTeX, pdfTeX"),
    ("auto-multiple-choice-doc-pdf", "usr/share/doc/auto-multiple-choice/auto-multiple-choice.en.pdf",
     "DocBook via dblatex, xdvipdfmx"),
    ("gnuplot-doc", "usr/share/doc/gnuplot/gnuplot.pdf", "LaTeX, pdfTeX"),
    ("glpk-doc", "usr/share/doc/glpk-doc/glpk.pdf", "LaTeX, dvipdfmx"),
    ("erlang-doc", "usr/share/doc/erlang-doc/lib/mnesia-*/doc/pdf/mnesia-*.pdf", "Erlang XML via Apache FOP"),
    ("python-reportlab-doc", "usr/share/doc/python-reportlab-doc/reportlab-userguide.pdf", "ReportLab"),
    ("groff", "usr/share/doc/groff-base/pdf/automake.pdf.gz", "groff, gropdf"),
    ("groff", "usr/share/doc/groff-base/pdf/pdfmark.pdf.gz", "groff, Ghostscript"),
    ("bash-doc", "usr/share/doc/bash/bashref.pdf", "Texinfo, pdfTeX"),
]
GLUED_LETTERS = 25


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "ragvsft" / "bench-pdfs")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "pdf_text.json")
    args = parser.parse_args()
    if not shutil.which("pdftotext"):
        sys.exit("pdftotext not found: apt-get install poppler-utils")
    logging.disable(logging.WARNING)  # pypdf and pdfminer log every oddity of real-world PDFs

    from rag.chunking import Chunker
    from rag.embedding import SentenceTransformerEmbedder

    embedder = SentenceTransformerEmbedder()
    chunker = Chunker(embedder.tokenizer, embedder.max_seq_length, 200, 40)
    rows = []
    for package, pattern, producer in PDFS:
        path, version = fetch(package, pattern, args.cache)
        rows.append(measure(path, str(path.relative_to(args.cache)), version, producer, chunker, args.repeats))
        print(table([rows[-1]]).splitlines()[-1], flush=True)
    summary = {
        "pdfs": len(rows),
        "pages": sum(r["pages"] for r in rows),
        "min_recall": {k: min(r[k]["recall"] for r in rows) for k in ("old", "new")},
        "max_glued_rate": {k: max(r[k]["glued_rate"] for r in rows) for k in ("old", "new")},
        "s_per_page_all": {k: sum(r[k]["seconds"] for r in rows) / sum(r["pages"] for r in rows)
                           for k in ("old", "new")},
        "goals": {"recall": 0.99, "glued_rate": 0.001},
        "min_outline_only_paths": {k: min(r["heading_paths"][k]["outline_only"] for r in rows if r["heading_paths"])
                                   for k in ("old", "new")},
    }
    report = {
        "benchmark": "pdf_text",
        "date": time.strftime("%Y-%m-%d"),
        "provenance": provenance(),
        "machine": machine(),
        "config": {"repeats": args.repeats, "chunk_size": 200, "chunk_overlap": 40, "glued_letters": GLUED_LETTERS,
                   "reference": pdftotext_version()},
        "summary": summary,
        "per_pdf": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(table(rows))
    print(json.dumps(summary, indent=2))


def fetch(package: str, pattern: str, cache: Path) -> tuple[Path, str]:
    """The PDF from the package, downloaded and unpacked into the cache when missing; (path, .deb name)."""
    folder = cache / package
    if not folder.is_dir():
        cache.mkdir(parents=True, exist_ok=True)
        download = cache / "download"
        shutil.rmtree(download, ignore_errors=True)
        download.mkdir()
        done = subprocess.run(["apt-get", "download", package], cwd=download, capture_output=True, text=True,
                              check=False)
        debs = sorted(download.glob(f"{package}_*.deb"))
        if done.returncode or not debs:
            sys.exit(f"apt-get download {package} failed (run `apt-get update` first?): {done.stderr.strip()}")
        tmp = cache / f"{package}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(tmp)], check=True)
        (tmp / "DEB").write_text(debs[0].name + "\n")
        tmp.rename(folder)
        shutil.rmtree(download)
    matches = sorted(glob.glob(str(folder / pattern)))
    if not matches:
        sys.exit(f"{pattern} not found in {folder}: the package changed; pick another PDF")
    path = Path(matches[0])
    if path.suffix == ".gz":
        plain = path.with_suffix("")
        if not plain.exists():
            plain.write_bytes(gzip.decompress(path.read_bytes()))
        path = plain
    return path, (folder / "DEB").read_text().strip()


def old_extract(path: Path) -> list[str]:
    """rag/loading.py's PDF extraction before issue 10 (its error handling left out)."""
    import ftfy
    import pypdfium2 as pdfium
    from pypdf import PdfReader

    def failed(text: str) -> bool:
        stripped = text.strip()
        if not stripped:
            return True
        letters = sum(ch.isalpha() for ch in stripped)
        return letters >= 200 and letters / len(stripped.split()) > 15

    data = path.read_bytes()
    reader = PdfReader(io.BytesIO(data))
    texts = [page.extract_text() or "" for page in reader.pages]
    bad = [i for i, t in enumerate(texts) if failed(t)]
    if bad:
        pdf = pdfium.PdfDocument(data)
        fallback = [pdf[i].get_textpage().get_text_range() for i in range(len(pdf))]
        pdf.close()
        for i in bad:
            if i < len(fallback) and not failed(fallback[i]):
                texts[i] = fallback[i]
    return [ftfy.fix_encoding(t) for t in texts]


def new_extract(path: Path) -> list[str]:
    from rag.loading import load

    return [p.text for p in load(path).pages]


def measure(path: Path, name: str, version: str, producer: str, chunker, repeats: int) -> dict:
    from rag.loading import Document, Page, load

    reference = subprocess.run(["pdftotext", "-enc", "UTF-8", str(path), "-"], capture_output=True,
                               text=True, check=True).stdout
    ref_words = collections.Counter(words(reference))
    times: dict[str, list[float]] = {"old": [], "new": []}
    texts: dict[str, list[str]] = {}
    for _ in range(repeats):
        for extractor, extract in (("old", old_extract), ("new", new_extract)):
            start = time.perf_counter()
            texts[extractor] = extract(path)
            times[extractor].append(time.perf_counter() - start)
    doc = load(path)
    row = {"pdf": name,
           "package": version, "producer": producer, "pages": len(texts["new"]),
           "reference_words": sum(ref_words.values()),
           "outline_titles": sum(len(p.sections) for p in doc.pages), "warnings": doc.warnings,
           "type_size_headings": type_size_headings(path, doc), "heading_paths": heading_paths(path, doc, chunker)}
    for extractor, pages in texts.items():
        chunks = chunker.split(Document(path, [Page(t, i + 1) for i, t in enumerate(pages)]), str(path))
        covered = chunk_text(pages, chunks)
        found = collections.Counter(words(covered))
        page_found = collections.Counter(words("\n".join(pages)))
        glued = [w for w in found.elements() if sum(ch.isalpha() for ch in w) > GLUED_LETTERS and w not in ref_words]
        seconds = statistics.median(times[extractor])
        row[extractor] = {
            "recall": recall(ref_words, found),
            "recall_page_text": recall(ref_words, page_found),
            "words": sum(found.values()),
            "glued_words": len(glued),
            "glued_rate": len(glued) / max(1, sum(found.values())),
            "glued_examples": sorted(set(glued), key=glued.index)[:3],
            "chunks": len(chunks),
            "seconds": seconds,
            "s_per_page": seconds / max(1, len(pages)),
        }
    return row


def heading_paths(path: Path, doc, chunker) -> dict:
    """In a PDF with an outline, the chunks whose heading path holds outline titles only: as the product
    reads the numbered heading lines of the text (`new`: running headers left out, and only levels below
    the outline's), and with every such line merged in, as before 2026-11-26 (`old`), when running
    headers with their page numbers ("Chapter 4: Shell Builtin Commands 50") and list items reset the
    path at level 1. (A numbered line below the outline's levels would count against `new` here; none
    of these PDFs has one.)"""
    from rag.headings import SEPARATOR, _clean, locate, text_headings
    from rag.loading import Document, Page, _merge

    outline = {_clean(title) for page in doc.pages for _, title in page.sections}
    if not outline:
        return {}
    unfiltered = [Page(p.text, p.page, p.sections, _merge(locate(p.text, p.sections), text_headings(p.text)))
                  for p in doc.pages]

    def from_outline(heading: str) -> bool:  # the chunker drops top levels, and cuts a lone long title's end
        parts = heading.split(SEPARATOR) if heading else []
        return all(t in outline or (len(parts) == 1 and any(o.startswith(t) for o in outline)) for t in parts)

    out = {}
    for name, document in (("old", Document(path, unfiltered)), ("new", doc)):
        chunks = chunker.split(document, str(path))
        other = [c.heading for c in chunks if not from_outline(c.heading)]
        out[name] = {"chunks": len(chunks), "outline_only": 1 - len(other) / max(1, len(chunks)),
                     "other_examples": list(dict.fromkeys(other))[:3]}
    return out


def type_size_headings(path: Path, doc) -> dict:
    """The headings a PDF without an outline gets (rag.pdf.font_headings, from type size), scored
    against this PDF's outline: the outline titles found on their page (recall), and the found titles
    that are in the outline (precision). Titles are compared by their letters and digits, one holding
    the other (an outline may leave out the section number the page prints)."""
    import pypdfium2 as pdfium

    from rag.pdf import font_headings, page_chars, sized_lines

    pdf = pdfium.PdfDocument(path.read_bytes())
    lines = []
    for i in range(len(pdf)):
        textpage = pdf[i].get_textpage()
        lines.append(sized_lines(page_chars(textpage)))
        textpage.close()
    pdf.close()
    found = [(index + 1, title) for index, _, title in font_headings(lines)]
    outline = [(page.page, title) for page in doc.pages for _, title in page.sections]

    def key(title: str) -> str:
        return "".join(ch for ch in title.lower() if ch.isalnum())

    def same(a: tuple[int, str], b: tuple[int, str]) -> bool:
        x, y = key(a[1]), key(b[1])
        return a[0] == b[0] and min(len(x), len(y)) >= 3 and (x in y or y in x)

    recalled = sum(any(same(o, f) for f in found) for o in outline)
    unmatched = [f for f in found if not any(same(f, o) for o in outline)]
    return {"outline": len(outline), "found": len(found), "recall": recalled / max(1, len(outline)),
            "precision": (len(found) - len(unmatched)) / max(1, len(found)),
            "unmatched_examples": [title for _, title in unmatched[:5]]}


def words(text: str) -> list[str]:
    text = unicodedata.normalize("NFKC", text)
    return [w for w in (re.sub(r"^\W+|\W+$", "", token) for token in text.split()) if w]


def recall(reference: collections.Counter, found: collections.Counter) -> float:
    return sum(min(n, found[w]) for w, n in reference.items()) / max(1, sum(reference.values()))


def chunk_text(pages: list[str], chunks) -> str:
    """The page text the chunks cover (the union of their spans), uncovered characters blanked."""
    out = []
    for number, text in enumerate(pages, start=1):
        mask = bytearray(len(text))
        for chunk in chunks:
            if chunk.page == number:
                assert text[chunk.start:chunk.end] == chunk.text, "a chunk's span does not hold its text"
                mask[chunk.start:chunk.end] = b"\x01" * (chunk.end - chunk.start)
        out.append("".join(ch if mask[i] else " " for i, ch in enumerate(text)))
    return "\n".join(out)


def table(rows: list[dict]) -> str:
    lines = ["| PDF (producer) | pages | recall old → new | glued old → new | s/page old → new |",
             "|---|---|---|---|---|"]
    for r in rows:
        o, n = r["old"], r["new"]
        lines.append(f"| {Path(r['pdf']).name} ({r['producer']}) | {r['pages']} "
                     f"| {o['recall']:.4f} → {n['recall']:.4f} | {o['glued_rate']:.3%} → {n['glued_rate']:.3%} "
                     f"| {o['s_per_page']:.4f} → {n['s_per_page']:.4f} |")
    return "\n".join(lines)


def machine() -> dict:
    from bench.machine import describe

    return describe() | {"load_average_at_end": os.getloadavg()}


def provenance() -> dict:
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10,
                                  check=False).stdout.strip()
        except OSError:
            return ""

    versions = {}
    for name in ("pypdf", "pypdfium2", "pdfminer.six", "ftfy", "langchain-text-splitters", "transformers"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {"git_sha": git("rev-parse", "HEAD") or None, "git_dirty": bool(git("status", "--porcelain")),
            "packages": versions}


def pdftotext_version() -> str:
    done = subprocess.run(["pdftotext", "-v"], capture_output=True, text=True, check=False)
    return "pdftotext " + (re.findall(r"version ([\d.]+)", done.stderr + done.stdout) or ["?"])[0]


if __name__ == "__main__":
    main()
