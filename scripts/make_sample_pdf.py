"""Build data/sample/marmot_field_notes.pdf from its Markdown source, one '## ' section a page.

Run: python scripts/make_sample_pdf.py   (needs fpdf2, a dev dependency). The PDF is committed so
that ingesting the sample needs nothing beyond the runtime dependencies.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from fpdf import FPDF

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "scripts/marmot_field_notes.md"
TARGET = ROOT / "data/sample/marmot_field_notes.pdf"


def sections(markdown: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    title, lines = "", []
    for line in markdown.splitlines():
        if line.startswith("#"):
            if title or any(l.strip() for l in lines):
                out.append((title, "\n".join(lines).strip()))
            title, lines = line.lstrip("#").strip(), []
        else:
            lines.append(line)
    out.append((title, "\n".join(lines).strip()))
    return out


def build(source: Path = SOURCE, target: Path = TARGET) -> Path:
    pdf = FPDF(format="A4")
    pdf.set_creation_date(datetime(2026, 1, 1, tzinfo=timezone.utc))  # same source, same bytes
    pdf.set_title("Field Notes on the Alpine Marmot")
    for title, body in sections(source.read_text(encoding="utf-8")):
        pdf.add_page()
        pdf.set_font("Helvetica", "B", 16)
        pdf.multi_cell(0, 10, title)
        pdf.ln(2)
        pdf.set_font("Helvetica", size=11)
        for paragraph in body.split("\n\n"):
            pdf.multi_cell(0, 6, " ".join(paragraph.split()))
            pdf.ln(3)
    pdf.output(str(target))
    return target


if __name__ == "__main__":
    print(build())
