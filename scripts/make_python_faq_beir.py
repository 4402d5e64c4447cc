"""Build a BEIR-format retrieval set and a qa.jsonl from the Python 3.11 FAQ in Debian's python3.11-doc.

Queries are the FAQ's question headings (every FAQ section with no subsections, h2 or h3); each
one's single relevant document (grade 1) is the answer under its heading. The corpus holds every
FAQ answer and, as distractors, sections of the tutorial and library reference, each section's own
text up to its first subsection, at most --max-distractors of them (a seeded sample when there are
more). Writes, under --out (default data/beir/python-faq):

  corpus.jsonl, queries.jsonl, qrels/test.tsv   BEIR format, read by eval.beir.load_beir
  qa.jsonl                                      the project's Q/A format: answer = the gold answer's
                                                first two sentences, evidence = its first sentence
                                                (extended to at least 6 words), source = the docs file
  docs/                                         one HTML file per page holding exactly the corpus
                                                sections, headings included, for `rag ingest`

The question is also the heading of its answer in docs/, as in the real FAQ, so lexical retrieval
finds many answers by the heading alone. Run from the repository root:

  python scripts/make_python_faq_beir.py            # apt-get download python3.11-doc (needs apt)
  python scripts/make_python_faq_beir.py --deb python3.11-doc_3.11.2-6+deb12u8_all.deb

Parsing uses lxml (required by inscriptis, a project dependency) and inscriptis for the text. It
does not ingest, embed or score anything.
"""

from __future__ import annotations

import argparse
import copy
import html
import json
import random
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import lxml.html
from inscriptis import get_text
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the checkout's eval package, installed or not

from eval.beir import write_beir  # noqa: E402
from eval.metrics import evidence_in_text  # noqa: E402
HTML_ROOT = "usr/share/doc/python3.11/html"  # inside the extracted package
DISTRACTOR_FOLDERS = ("tutorial", "library")
HEADINGS = {"h1", "h2", "h3", "h4", "h5", "h6"}
MIN_DISTRACTOR_WORDS = 20  # shorter sections are mostly a heading over a link list
MIN_EVIDENCE_WORDS = 6  # "Yes." alone is no evidence: it matches almost any passage
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\u201c\u2018])")


@dataclass
class Section:
    doc_id: str  # "faq/general.html#what-is-python"
    docs_file: str  # the file in docs/ that holds it: "faq-general.html"
    page_title: str
    level: int  # 1 for the page title's <h1>, 2 for <h2>, ...
    heading: str
    text: str  # the body under the heading, as plain text
    html: str  # heading and body, for the docs file
    first_paragraph: str


def download_deb(work: Path) -> Path:
    if shutil.which("apt-get") is None:
        sys.exit("apt-get not found: download python3.11-doc_*.deb elsewhere and pass --deb PATH")
    result = subprocess.run(["apt-get", "download", "python3.11-doc"], cwd=work, capture_output=True, text=True)
    debs = sorted(work.glob("python3.11-doc_*.deb"))
    if result.returncode != 0 or not debs:
        sys.exit(f"apt-get download python3.11-doc failed ({result.stderr.strip()}); pass --deb PATH instead")
    return debs[-1]


def extract(deb: Path, work: Path) -> Path:
    if shutil.which("dpkg-deb") is None:
        sys.exit("dpkg-deb not found: it ships with dpkg on Debian and Ubuntu")
    target = work / "extracted"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(target)], check=True)
    html_root = target / HTML_ROOT
    if not (html_root / "faq").is_dir():
        sys.exit(f"{deb}: no {HTML_ROOT}/faq inside; is this the python3.11-doc package?")
    return html_root


def page_sections(path: Path, html_root: Path) -> list[tuple[Section, bool]]:
    """(section, is_leaf) for every <section> of a Sphinx page; a section's text stops at its
    first subsection, so the sections of one page never overlap."""
    relative = path.relative_to(html_root).as_posix()
    tree = lxml.html.parse(str(path)).getroot()
    for permalink in tree.xpath('//a[@class="headerlink"]'):  # the pilcrow after each heading
        permalink.drop_tree()
    main = tree.find('.//div[@role="main"]')
    if main is None:
        return []
    title = tree.findtext(".//title") or relative
    page_title = title.split(" \u2014 ")[0].strip()
    out = []
    for section in main.iter("section"):
        own = copy.deepcopy(section)
        own.tail = None
        for child in list(own):
            if child.tag == "section":
                own.remove(child)
        heading = next((child for child in own if child.tag in HEADINGS), None)
        if heading is None:
            continue
        heading_text = " ".join(heading.text_content().split())
        heading_html = lxml.html.tostring(heading, encoding="unicode", with_tail=False)
        heading.drop_tree()  # keeps its tail text
        body_html = "".join(lxml.html.tostring(child, encoding="unicode") for child in own)
        body_html = html.escape(own.text or "") + body_html
        paragraph = own.find(".//p")
        out.append((Section(
            doc_id=f"{relative}#{section.get('id')}",
            docs_file=relative.replace("/", "-"),
            page_title=page_title,
            level=int(heading.tag[1]),
            heading=heading_text,
            text=plain_text(body_html),
            html=f'<section id="{section.get("id")}">\n{heading_html}\n{body_html}\n</section>',
            first_paragraph=" ".join(paragraph.text_content().split()) if paragraph is not None else "",
        ), section.find(".//section") is None))
    return out


def plain_text(fragment: str) -> str:
    if not fragment.strip():
        return ""
    text = textwrap.dedent(get_text(f"<div>{fragment}</div>"))
    lines = [line.rstrip() for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def sentences(text: str) -> list[str]:
    return [part.strip() for part in SENTENCE_END.split(" ".join(text.split())) if part.strip()]


def qa_row(query_id: str, section: Section) -> dict:
    parts = sentences(section.first_paragraph or section.text)
    evidence = parts[0]
    for part in parts[1:]:
        if len(evidence.split()) >= MIN_EVIDENCE_WORDS:
            break
        evidence += " " + part
    return {
        "id": query_id,
        "question": section.heading,
        "answer": " ".join(parts[:2]),
        "evidence": evidence,
        "source": section.docs_file,
        "facts": [],
        "answerable": True,
    }


def build(html_root: Path, out: Path, docs_out: Path, max_distractors: int, seed: int) -> dict[str, int]:
    questions: list[Section] = []
    for path in sorted((html_root / "faq").glob("*.html")):
        for section, leaf in page_sections(path, html_root):
            # A question: a heading below the page title with no subsections and some answer
            # text. Not every question ends in "?"; the one empty leaf, "General GUI Questions",
            # is a group heading and drops out here.
            if leaf and section.level > 1 and section.text:
                questions.append(section)
    if not questions:
        sys.exit(f"{html_root}/faq: no FAQ questions found; has the Sphinx layout changed?")

    pages = [p for folder in DISTRACTOR_FOLDERS for p in sorted((html_root / folder).glob("*.html"))
             if p.name != "index.html"]  # index pages are tables of contents
    candidates = [section for path in tqdm(pages, desc="parsing documentation pages", unit="page")
                  for section, _ in page_sections(path, html_root)
                  if len(section.text.split()) >= MIN_DISTRACTOR_WORDS]
    if len(candidates) > max_distractors:
        keep = set(random.Random(seed).sample(range(len(candidates)), max_distractors))
        candidates = [section for n, section in enumerate(candidates) if n in keep]

    corpus_sections = questions + candidates
    corpus = {}
    for section in corpus_sections:
        if section.doc_id in corpus:
            sys.exit(f"duplicate section id {section.doc_id}")
        title = section.heading
        if section.heading != section.page_title:
            title = f"{section.page_title}: {section.heading}"
        corpus[section.doc_id] = {"title": title, "text": section.text}
    # faq/general.html#what-is-python -> faq-general-what-is-python
    query_ids = {s.doc_id: "faq-" + s.doc_id[len("faq/"):].replace(".html#", "-") for s in questions}
    queries = {query_ids[s.doc_id]: s.heading for s in questions}
    qrels = {query_ids[s.doc_id]: {s.doc_id: 1} for s in questions}

    write_beir(out, corpus, queries, qrels)
    rows = [qa_row(query_ids[s.doc_id], s) for s in questions]
    with open(out / "qa.jsonl", "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    write_docs(docs_out, corpus_sections)
    # inscriptis spaces inline code apart ("int , list"), so containment is checked as the
    # evaluation checks it, on tokens.
    unmatched = sum(not evidence_in_text(row["evidence"], s.text, overlap_threshold=None)
                    for row, s in zip(rows, questions))
    return {"queries": len(queries), "corpus": len(corpus), "faq answers": len(questions),
            "distractors": len(candidates), "docs files": len({s.docs_file for s in corpus_sections}),
            "evidence not found in its answer": unmatched}


def write_docs(folder: Path, sections: list[Section]) -> None:
    if folder.exists():
        shutil.rmtree(folder)  # stale pages from an earlier sample would be ingested too
    folder.mkdir(parents=True)
    by_file: dict[str, list[Section]] = {}
    for section in sections:  # in page order
        by_file.setdefault(section.docs_file, []).append(section)
    for name, page in by_file.items():
        title = html.escape(page[0].page_title)
        body = "\n".join(section.html for section in page)
        (folder / name).write_text(
            f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{title}</title></head>\n'
            f"<body>\n<h1>{title}</h1>\n{body}\n</body></html>\n",
            encoding="utf-8",
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deb", type=Path,
                        help="an already downloaded python3.11-doc .deb (default: apt-get download it)")
    parser.add_argument("--out", type=Path, default=ROOT / "data/beir/python-faq")
    parser.add_argument("--docs-out", type=Path, help="default: OUT/docs")
    parser.add_argument("--max-distractors", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0, help="for the distractor sample")
    args = parser.parse_args()
    if args.max_distractors < 0:
        parser.error(f"--max-distractors must be 0 or more, got {args.max_distractors}")
    if args.deb is not None and not args.deb.is_file():
        parser.error(f"--deb {args.deb}: file not found")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="python-faq-") as work:
        deb = args.deb.resolve() if args.deb else download_deb(Path(work))
        counts = build(extract(deb, Path(work)), args.out, args.docs_out or args.out / "docs",
                       args.max_distractors, args.seed)
    summary = ", ".join(f"{key} {value}" for key, value in counts.items())
    print(f"{args.out}: {summary} ({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
