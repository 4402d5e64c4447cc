"""PDF extraction (rag/pdf.py): word gaps kept, glued lines found one by one, outline titles per
page, parser errors as one line. The PDFs are drawn here with fpdf2."""

from __future__ import annotations

import io
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fpdf import FPDF

from rag import pdf as pdf_module
from rag.loading import LoadError, load
from rag.pdf import glued_lines, line_glued, read_pdf, respace_page

GLUED = ["the", "package", "is", "available", "for", "GNU/Linux", "from", "the", "archive", "and", "it", "installs",
         "quickly"]
PROSE = [
    "Alpine marmots live in colonies on high meadows and dig long burrows into the slopes.",
    "A colony shares one winter burrow and its members take turns to keep watch for eagles.",
    "When a marmot sees a threat it gives a loud whistle and the others run for the holes.",
    "They eat grasses, herbs and flowers in summer and put on fat for the long winter sleep.",
]


def new_pdf() -> FPDF:
    pdf = FPDF(format="A4")
    pdf.set_creation_date(datetime(2026, 1, 1, tzinfo=UTC))  # same drawing, same bytes
    pdf.set_font("Times", size=11)
    return pdf


def draw_page(pdf: FPDF, rows: list[str | list[str]]) -> None:
    """One page, a row every 6 mm. A str row is set as usual, with space glyphs; a list row is set
    word by word, each word moved 0.4 mm (0.1 em) past the last and no space glyph between them, as
    LaTeX sets a tight justified line: pypdf and pypdfium2 both read such a row as one long word."""
    pdf.add_page()
    for n, row in enumerate(rows):
        y = 30 + 6 * n
        if isinstance(row, str):
            pdf.text(20, y, row)
            continue
        x = 20.0
        for word in row:
            pdf.text(x, y, word)
            x += pdf.get_string_width(word) + 0.4


def pdf_bytes(pages: list[list[str | list[str]]]) -> bytes:
    pdf = new_pdf()
    for rows in pages:
        draw_page(pdf, rows)
    return bytes(pdf.output())


def test_words_drawn_without_space_glyphs_are_read_apart(tmp_path: Path):
    from pypdf import PdfReader

    path = tmp_path / "tight.pdf"
    path.write_bytes(pdf_bytes([[GLUED, GLUED[::-1], PROSE[0]]]))
    assert "thepackageisavailable" in PdfReader(path).pages[0].extract_text()  # what the old reader gave

    doc = load(path)
    lines = doc.pages[0].text.split("\n")
    assert lines[0] == " ".join(GLUED)
    assert lines[1] == " ".join(GLUED[::-1])
    assert lines[2] == PROSE[0]
    assert any("word gap(s) on 1 page(s) restored with pdfminer.six" in w for w in doc.warnings)


def test_words_hyphenated_at_line_ends_are_whole_again_and_compounds_keep_their_hyphen(tmp_path: Path):
    path = tmp_path / "hyphens.pdf"
    path.write_bytes(pdf_bytes([[
        "Alpine marmots live in colonies on high mea-",
        "dows, and dig long burrows into the slopes.",
        "A marmot hot-spot lies below the pass; another hot-",
        "spot lies near the lake, where an LU-",
        "factorization would be out of place.",
    ]]))
    lines = load(path).pages[0].text.split("\n")
    assert lines[0] == "Alpine marmots live in colonies on high meadows,"  # the word and its comma move up
    assert lines[1] == "and dig long burrows into the slopes."
    assert lines[2] == "A marmot hot-spot lies below the pass; another hot-spot"  # printed so mid-line
    assert lines[3] == "lies near the lake, where an LU-"  # not between lower-case letters
    assert lines[4] == "factorization would be out of place."


def test_a_footnote_number_is_set_apart_from_the_word_it_touches(tmp_path: Path):
    """A raised, smaller "2" right against "This", as LaTeX sets a footnote: pdfium reads "2This"."""
    pdf = new_pdf()
    pdf.add_page()
    rows = [*PROSE[:2], "This colony is the oldest one on the mountain.", "Come and see 3Com."]
    for n, row in enumerate(rows):
        pdf.text(20, 30 + 6 * n, row)
    pdf.set_font("Times", size=7)
    pdf.text(20, 60 - 1.0, "2")
    offset = pdf.get_string_width("2")
    pdf.set_font("Times", size=9)
    pdf.text(20 + offset, 60, "This colony was counted in the winter of 2019.")
    path = tmp_path / "footnote.pdf"
    path.write_bytes(bytes(pdf.output()))
    lines = load(path).pages[0].text.split("\n")
    assert lines[-1] == "2 This colony was counted in the winter of 2019."
    assert "Come and see 3Com." in lines  # a name, not a footnote: "Com" occurs nowhere else


def test_a_subscript_is_set_apart_from_the_next_symbol_and_formulas_stay_whole(tmp_path: Path):
    """pdfium runs a subscript into what follows ("ai1xm+1" for a_i1 x_m+1); pdftotext, the benchmark's
    reference, sets a space where a script ends, and so does rag/pdf.py. A chemical formula and a
    superscript before punctuation keep their form."""
    pdf = new_pdf()
    pdf.add_page()
    pdf.set_font("helvetica", size=12)
    parts = [("The constraint is a", "LINE"), ("i1", "SUB"), ("x", "LINE"), ("m+1", "SUB"), (" + a", "LINE"),
             ("i2", "SUB"), ("x", "LINE"), ("m+2", "SUB"), (" where (x", "LINE"), ("B", "SUB"), (")k is basic.", "LINE")]
    for text, position in parts:
        pdf.char_vpos = position
        pdf.write(8, text)
    pdf.ln(10)
    parts = [("Water is H", "LINE"), ("2", "SUB"), ("O and rust is Fe", "LINE"), ("2", "SUB"), ("O", "LINE"),
             ("3", "SUB"), (", as E = mc", "LINE"), ("2", "SUP"), (".", "LINE")]
    for text, position in parts:
        pdf.char_vpos = position
        pdf.write(8, text)
    path = tmp_path / "scripts.pdf"
    path.write_bytes(bytes(pdf.output()))
    assert load(path).pages[0].text.split("\n") == ["The constraint is ai1 xm+1 + ai2 xm+2 where (xB) k is basic.",
                                                    "Water is H2O and rust is Fe2O3, as E = mc2."]


def test_a_few_glued_lines_among_good_ones_are_found_and_respaced():
    rows: list[str | list[str]] = [*PROSE, *PROSE, GLUED, *PROSE, GLUED[3:], *PROSE]
    data = pdf_bytes([rows])
    raw = pdf_module._read_pdfium(data)[0][0]  # pypdfium2's text before any repair
    letters = sum(ch.isalpha() for ch in raw)
    assert letters / len(raw.split()) < 15  # the old whole-page average passed this page as good
    assert glued_lines(raw) == [8, 13]

    text = read_pdf(data).pages[0].text
    lines = text.split("\n")
    assert lines[8] == " ".join(GLUED) and lines[13] == " ".join(GLUED[3:])
    assert [line for n, line in enumerate(lines) if n not in (8, 13)] == [r for r in rows if isinstance(r, str)]


@pytest.mark.parametrize(
    ("line", "glued"),
    [
        ("thepackageisavailableforGNU/Linuxfrom the archive", True),
        ("FrançoisBobot,Jean-ChristopheFilliâtre,ClaudeMarché,GuillaumeMelquiond", True),
        ("Alpine marmots live in colonies on high meadows and dig long burrows.", False),
        ("http://cvs.sourceforge.net/cgi-bin/viewcvs.cgi/gri/gri/gri-mode.el", False),
        ("canvas.drawInlineImage(self, image, x,y, width=None,height=None)", False),
        ("自体の限界でコンパイルができないことがあり、例えば、というエラーが出ます", False),  # no spaces by design
        ("Contents", False),
    ],
)
def test_line_glued(line: str, glued: bool):
    assert line_glued(line) is glued


def test_respacing_takes_known_words_and_leaves_kerned_splits():
    text = "you can pick anyother view\nhowever the view stays\nanother line"
    alternative = "you can pick any other view\nhowev er the view stays\nanother line"
    vocabulary = Counter({"any": 7, "other": 4, "however": 3, "the": 20, "view": 5})
    fixed, inserted = respace_page(text, None, alternative, vocabulary)
    assert fixed == "you can pick any other view\nhowever the view stays\nanother line"
    assert inserted == 1


def test_a_glued_word_beside_a_word_the_document_uses_often_is_split():
    # "derivedfrom" (groff via Ghostscript): "derived" never stands alone in the document and always
    # has "from" after it in pdfminer's text, so neither rule above confirms it; "from" stands alone
    # five times, so the gap is taken. A kerning split ("howev er") has no such word beside it, and a
    # word used four times is not common enough.
    text = "it is derivedfrom a\nhowever it is\nthe newpage here"
    alternative = "it is derived from a\nhowev er it is\nthe new page here"
    vocabulary = Counter({"it": 9, "is": 9, "a": 9, "from": 5, "however": 3, "new": 4, "the": 9, "here": 2})
    fixed, inserted = respace_page(text, None, alternative, vocabulary)
    assert fixed == "it is derived from a\nhowever it is\nthe newpage here" and inserted == 1
    vocabulary["new"] = 5
    assert respace_page(text, None, alternative, vocabulary)[0].endswith("the new page here")


def test_words_glued_everywhere_are_split_where_pdfminer_sets_them_between_different_neighbours():
    # A producer that drops every short gap (Ghostscript): "two" never stands alone in pdfium's text,
    # so the document's vocabulary cannot confirm it; in pdfminer's text it has different words on
    # both sides. A kerning split's piece ("howev") always has the same neighbour, and stays whole.
    # Beside a common English word ("theyare") a gap is taken on the vocabulary alone.
    from rag.pdf import _vocabulary, _with_free_words

    text = ("there are twodistinct forms of the macro; theyare kept\n"
            "the twomacros are distinct ways, however, in the manual\n"
            "2.4.3. Associating aDocument Viewwith an Outline ............... 5\n"
            "•Adding document identification,by the macros\n"
            "however the macros are loaded by a note with a view, by hand with a mark")
    alternative = ("there are two distinct forms of the macro; they are kept\n"
                   "the two macros are distinct ways, howev er, in the manual\n"
                   "2.4.3.  Associating a Document View with an Outline .\n"
                   "Adding document identification, by the macros\n"
                   "howev er the macros are loaded by a note with a view, by hand with a mark")
    vocabulary = _vocabulary([text])
    assert vocabulary["two"] == 0
    alone, _ = respace_page(text, None, alternative, vocabulary)
    assert "twodistinct" in alone and "they are" in alone
    fixed, _ = respace_page(text, None, alternative, _with_free_words(vocabulary, [alternative]))
    assert fixed.splitlines() == [
        "there are two distinct forms of the macro; they are kept",
        "the two macros are distinct ways, however, in the manual",
        "2.4.3. Associating a Document View with an Outline ............... 5",  # matched without its leader
        "•Adding document identification, by the macros",  # matched without its bullet
        "however the macros are loaded by a note with a view, by hand with a mark",
    ]


def test_outline_titles_come_with_their_pages(tmp_path: Path):
    pdf = new_pdf()
    pdf.add_page()
    pdf.start_section("Introduction")
    pdf.text(20, 30, PROSE[0])
    pdf.add_page()
    pdf.start_section("Burrows")
    pdf.text(20, 30, PROSE[1])
    pdf.start_section("Winter burrows", level=1)
    pdf.text(20, 40, PROSE[2])
    pdf.add_page()
    pdf.text(20, 30, PROSE[3])
    path = tmp_path / "outline.pdf"
    pdf.output(str(path))
    doc = load(path)
    assert [p.sections for p in doc.pages] == [[(1, "Introduction")], [(1, "Burrows"), (2, "Winter burrows")], []]
    assert [p.page for p in doc.pages] == [1, 2, 3]


def broken_pages(pages: list[int]) -> bytes:
    """Two pages whose page objects `pages` (1-based) are damaged: pypdfium2 raises "Failed to load
    page" on them, as it did on 12 of 840 fuzzed PDFs (issue 12), and pypdf cannot read them either."""
    pdf = new_pdf()
    pdf.set_compression(False)
    for n in range(2):
        draw_page(pdf, [f"Page {n + 1}: {PROSE[n]}"])
    data = bytes(pdf.output())
    for page in pages:
        obj = f"{2 * page + 1} 0 obj\n<<".encode()  # fpdf2 numbers page 1 as object 3, page 2 as 5
        assert obj in data
        data = data.replace(obj, obj[:-2] + b"[[")
    return data


def test_a_damaged_page_is_left_empty_with_a_warning(tmp_path: Path):
    path = tmp_path / "one-bad-page.pdf"
    path.write_bytes(broken_pages([1]))
    doc = load(path)
    assert doc.pages[0].text == ""
    assert PROSE[1] in doc.pages[1].text
    assert doc.warnings == ["1 unreadable page(s) left empty (1): pypdfium2: PdfiumError: Failed to load page."]


def test_a_damaged_pdf_gives_one_load_error(tmp_path: Path):
    path = tmp_path / "all-bad-pages.pdf"
    path.write_bytes(broken_pages([1, 2]))
    with pytest.raises(LoadError, match=r"all-bad-pages\.pdf: not a readable PDF \(pypdfium2: PdfiumError: "
                                        r"Failed to load page\.\)$") as info:
        load(path)
    assert "\n" not in str(info.value)


def test_truncated_pdf_gives_one_load_error(tmp_path: Path):
    path = tmp_path / "cut.pdf"
    path.write_bytes(pdf_bytes([[PROSE[0]]])[:300])
    with pytest.raises(LoadError, match=r"cut\.pdf: ") as info:
        load(path)
    assert "\n" not in str(info.value)


def test_pdfminer_failure_keeps_the_text_and_says_so(monkeypatch):
    def broken(data: bytes, indexes: list[int]) -> dict[int, str]:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(pdf_module, "_pdfminer_pages", broken)
    result = read_pdf(pdf_bytes([[GLUED, PROSE[0]]]))
    assert result.pages[0].text.split("\n")[0] == "".join(GLUED)
    assert result.warnings == [("1 glued line(s) kept: pdfminer.six could not read the file "
                                "(pdfminer: RecursionError: maximum recursion depth exceeded)")]


def test_encrypted_pdf_reads_with_empty_user_password_and_not_without():
    from pypdf import PdfReader, PdfWriter

    source = PdfReader(io.BytesIO(pdf_bytes([[PROSE[0]]])))
    for user, readable in (("", True), ("secret", False)):
        writer = PdfWriter()
        writer.add_page(source.pages[0])
        writer.encrypt(user_password=user, owner_password="owner", algorithm="AES-256")
        out = io.BytesIO()
        writer.write(out)
        if readable:
            assert PROSE[0] in read_pdf(out.getvalue()).pages[0].text
        else:
            with pytest.raises(pdf_module.PdfError, match="encrypted PDF"):
                read_pdf(out.getvalue())
