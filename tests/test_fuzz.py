"""Fuzzing the ingest batch (issue 12): seeded mutants of a PDF made here with fpdf2 (bytes
changed, the file cut short, garbage inserted) and of text files (random bytes, NULs, invalid UTF-8,
huge lines), ingested in batches beside a good file through the real pipeline.

Whatever a parser does with a mutant, the good file lands, no exception escapes, and each mutant
is either ingested or named by exactly one one-line error. Texts are kept tiny: the embedder is
the real MiniLM (~30 chunks/s on 2 CPU cores).
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path

from fpdf import FPDF

from ingest.pipeline import ingest

SEED = 12
BATCHES = 6
PDFS_PER_BATCH = 14
TEXTS_PER_BATCH = 6


def base_pdfs() -> list[bytes]:
    """The same two outlined pages, with streams compressed (fpdf2's default) and not: damage to a
    compressed stream mostly costs its text, damage to plain objects reaches the parsers' structure."""
    out = []
    for compress in (True, False):
        pdf = FPDF(format=(105, 148))  # A6 in mm
        pdf.set_creation_date(datetime(2026, 1, 1, tzinfo=UTC))
        pdf.set_compression(compress)
        for n, line in enumerate(["Marmots whistle when an eagle circles.", "They sleep from October to April."]):
            pdf.add_page()
            pdf.start_section(f"Part {n + 1}")
            pdf.set_font("Helvetica", size=11)
            pdf.multi_cell(0, 6, line)
        out.append(bytes(pdf.output()))
    return out


def mutate_pdf(rng: random.Random, data: bytes) -> tuple[str, bytes]:
    kind = rng.choice(["flip4", "flip", "cut", "insert", "zeros"])
    out = bytearray(data)
    if kind in ("flip4", "flip"):  # flip4: the 4 changed bytes of the report
        for _ in range(4 if kind == "flip4" else rng.randint(1, 16)):
            out[rng.randrange(len(out))] = rng.randrange(256)
    elif kind == "cut":
        del out[rng.randrange(1, len(out)):]
    elif kind == "insert":
        at = rng.randrange(len(out))
        out[at:at] = rng.randbytes(rng.randint(1, 64))
    else:
        at = rng.randrange(len(out))
        out[at:at + rng.randint(1, 32)] = b"\x00" * 32
    return kind, bytes(out)


def mutate_text(rng: random.Random) -> tuple[str, str, bytes]:
    sentence = b"The colony shares one burrow in winter. "
    kind = rng.choice(["random", "nuls", "utf8", "huge", "mixed"])
    if kind == "random":
        data = rng.randbytes(rng.randint(1, 400))
    elif kind == "nuls":
        data = bytearray(sentence * 3)
        for _ in range(rng.randint(1, 8)):
            data.insert(rng.randrange(len(data)), 0)
        data = bytes(data)
    elif kind == "utf8":  # stray continuation bytes, truncated sequences, surrogates, overlongs
        bad = [b"\xff", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80", b"\xc0\xaf", b"\x80\x80", b"\xf8\x88\x80\x80\x80"]
        data = b"".join(rng.choice([sentence, rng.choice(bad)]) for _ in range(rng.randint(2, 12)))
    elif kind == "huge":  # one line of ~4 KB, no newline, with 300-letter words
        vocabulary = ["marmot", "eagle", "burrow", "x" * 300]
        data = " ".join(rng.choice(vocabulary) for _ in range(rng.randint(250, 450))).encode()
    else:
        data = sentence + rng.randbytes(rng.randint(1, 60)) + sentence
    suffix = rng.choice([".txt", ".md", ".html"])
    return kind, suffix, data


def pdfium_fails_on_a_page(data: bytes) -> bool:
    """Whether pypdfium2 opens the file but cannot load one of its pages: the crash of issue 12."""
    import pypdfium2 as pdfium

    try:
        pdf = pdfium.PdfDocument(data)
    except pdfium.PdfiumError:
        return False
    try:
        for i in range(len(pdf)):
            pdf[i].close()
    except pdfium.PdfiumError:
        return True
    finally:
        pdf.close()
    return False


def test_mutated_files_never_abort_a_batch(tmp_path: Path, collection, embedder, chunker):
    rng = random.Random(SEED)
    bases = base_pdfs()
    mutants = ingested = page_failures = 0
    for batch in range(BATCHES):
        folder = tmp_path / f"batch{batch}"
        folder.mkdir()
        good = folder / "good.txt"
        good.write_text(f"Batch {batch}: alpine marmots hibernate for about six months.\n")
        bad: list[Path] = []
        for n in range(PDFS_PER_BATCH):
            kind, data = mutate_pdf(rng, rng.choice(bases))
            page_failures += pdfium_fails_on_a_page(data)
            bad.append(folder / f"m{n:02d}-{kind}.pdf")
            bad[-1].write_bytes(data)
        for n in range(TEXTS_PER_BATCH):
            kind, suffix, data = mutate_text(rng)
            bad.append(folder / f"t{n:02d}-{kind}{suffix}")
            bad[-1].write_bytes(data)

        report = ingest([folder], collection, embedder, chunker)

        stored = collection.file_hashes()
        assert str(good.resolve()) in stored, report.errors
        assert report.new + report.failed == 1 + len(bad), report.as_dict()
        for error in report.errors:
            assert "\n" not in error and "Traceback" not in error
        for path in bad:
            key = str(path.resolve())
            naming = [e for e in report.errors if e.startswith(key + ":")]
            if key in stored:
                assert naming == [], naming
                ingested += 1
            else:
                assert len(naming) == 1, (path.name, report.errors)
        mutants += len(bad)
    assert mutants == BATCHES * (PDFS_PER_BATCH + TEXTS_PER_BATCH)
    assert 0 < ingested < mutants  # the mutants were neither all harmless nor all fatal
    assert page_failures > 0  # and they include the kind that aborted the batch before


def test_one_damaged_pdf_does_not_abort_the_batch(tmp_path: Path, collection, embedder, chunker):
    """Issue 12 as reported: three files, one PDF whose pages pypdfium2 cannot load."""
    from test_pdf import broken_pages, pdf_bytes

    (tmp_path / "notes.txt").write_text("Marmots whistle when an eagle circles above the meadow.\n")
    (tmp_path / "good.pdf").write_bytes(pdf_bytes([["They sleep from October to April in one burrow."]]))
    (tmp_path / "damaged.pdf").write_bytes(broken_pages([1, 2]))
    report = ingest([tmp_path], collection, embedder, chunker)
    assert (report.new, report.failed) == (2, 1)
    assert len(report.errors) == 1
    assert report.errors[0].endswith("damaged.pdf: not a readable PDF (pypdfium2: PdfiumError: Failed to load page.)")
