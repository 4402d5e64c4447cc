"""Chunks know their section: heading paths from Markdown, HTML, PDF outlines and numbered lines."""

from pathlib import Path

import pytest

from rag.headings import Heading, HeadingPath, drop_running_headers, locate, markdown_headings, text_headings
from rag.loading import load


def test_markdown_headings_and_paths(chunker, tmp_path):
    doc = tmp_path / "guide.md"
    body = "Words about the topic at hand, enough of them to stand alone as a section of text. " * 3
    doc.write_text(f"# Admin Guide\n\nIntro. {body}\n\n## 5 Software\n\n{body}\n\n### 5.12 Where is the backup tool?\n\n"
                   f"It is in /usr/sbin/backup. {body}\n\n```\n# not a heading\n```\n\n## 6 Hardware\n\n{body}\n")
    chunks = chunker.split(load(doc), "guide.md")
    assert [c.heading for c in chunks] == [
        "Admin Guide", "Admin Guide > 5 Software", "Admin Guide > 5 Software > 5.12 Where is the backup tool?",
        "Admin Guide > 6 Hardware"]
    backup = chunks[2]
    assert backup.text.startswith("### 5.12 Where is the backup tool?") and "/usr/sbin/backup" in backup.text
    assert backup.indexed.startswith("Admin Guide > 5 Software > 5.12 Where is the backup tool?\n")


def test_html_headings(chunker):
    chunks = chunker.split(load(Path(__file__).parent.parent / "data/sample/tidy_t3_manual.html"), "t3.html")
    warranty = next(c for c in chunks if "two-year warranty" in c.text)
    assert warranty.heading == "Tidy T3 Robot Vacuum: Quick Manual > Warranty"


def test_pdf_outline_gives_heading_paths(chunker, tmp_path):
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("helvetica", size=11)
    sections = [(0, "Marmot Guide"), (1, "Hibernation"), (1, "Whistles")]
    texts = {"Hibernation": "Alpine marmots hibernate for about six months, from October to April. " * 4,
             "Whistles": "A single sharp whistle warns of an eagle or another threat from the air. " * 4,
             "Marmot Guide": "These notes describe the Alpine marmot of the central European mountains. " * 4}
    for level, title in sections:
        pdf.add_page()
        pdf.start_section(title, level=level)
        pdf.multi_cell(0, 6, f"{title}\n{texts[title]}")
    path = tmp_path / "guide.pdf"
    pdf.output(str(path))
    chunks = chunker.split(load(path), "guide.pdf")
    by_page = {c.page: c.heading for c in chunks}
    assert by_page == {1: "Marmot Guide", 2: "Marmot Guide > Hibernation", 3: "Marmot Guide > Whistles"}


def test_numbered_lines_add_only_what_a_pdf_outline_lacks(chunker, tmp_path):
    """A running header with its page number ("Chapter 1: Marmot Guide 2", as Texinfo sets one) and a
    numbered list item look like numbered headings; taken for them, each would reset the heading path
    at level 1. The outline is taken at its word for its two levels; a numbered subsection below them
    is kept."""
    from fpdf import FPDF

    body = {"Marmot Guide": "These notes describe the Alpine marmot of the central European mountains. ",
            "Hibernation": "Alpine marmots hibernate for about six months, from October to April. ",
            "1.1.1 Heart rate": "During hibernation the heart beats only three to five times a minute. ",
            "Whistles": "A single sharp whistle warns of an eagle or another threat from the air. ",
            "": "Repeated whistles warn of a fox, a dog or another threat on the ground. "}
    pages = [[(0, "Marmot Guide")], [(1, "Hibernation"), (None, "1.1.1 Heart rate")], [(1, "Whistles")], [(None, "")]]
    pdf = FPDF()
    pdf.set_font("helvetica", size=11)
    for number, sections in enumerate(pages, start=1):
        pdf.add_page()
        if number > 1:
            pdf.multi_cell(0, 6, f"Chapter 1: Marmot Guide {number}", new_x="LMARGIN", new_y="NEXT")
        for level, title in sections:
            if level is not None:
                pdf.start_section(title, level=level)
            pdf.multi_cell(0, 6, f"{title}\n{body[title] * 4}", new_x="LMARGIN", new_y="NEXT")
            if title == "Hibernation":
                pdf.multi_cell(0, 6, "1. If the burrow floods, the family moves\nto the next one.",
                               new_x="LMARGIN", new_y="NEXT")
    path = tmp_path / "guide.pdf"
    pdf.output(str(path))
    chunks = chunker.split(load(path), "guide.pdf")
    assert sorted({(c.page, c.heading) for c in chunks}) == [
        (1, "Marmot Guide"), (2, "Marmot Guide > Hibernation"), (2, "Marmot Guide > Hibernation > 1.1.1 Heart rate"),
        (3, "Marmot Guide > Whistles"), (4, "Marmot Guide > Whistles")]


def test_pdf_without_outline_takes_headings_from_type_size(chunker, tmp_path):
    """A word processor's PDF has no outline and unnumbered headings: they are known by larger type,
    the larger the higher; a large running header, a drop cap, a caption, a paragraph set large and
    small print are not headings."""
    from fpdf import FPDF

    pdf = FPDF()
    pages = [([("Field Notes on the", 20), ("Alpine Marmot", 20)],  # a title set on two lines
              "These notes describe the Alpine marmot of the central European mountains. "),
             ([("Hibernation", 15)], "Alpine marmots hibernate for about six months, from October to April. "),
             ([("Heart rate", 13)], "During hibernation the heart beats only three to five times a minute. "),
             ([("Whistles", 15)], "A single sharp whistle warns of an eagle or another threat from the air. "),
             ([("Figure 2: a marmot on guard", 15), ("4.1 Calls", 13), ("4.2 Alarms", 13),  # two headings
               ("A quoted passage set large is no heading, however many lines it runs over. " * 3, 15)],
              "Repeated whistles warn of a fox, a dog or another threat on the ground. ")]
    for titles, text in pages:
        pdf.add_page()
        pdf.set_font("helvetica", "B", 18)
        pdf.cell(0, 8, "MARMOT NOTES", new_x="LMARGIN", new_y="NEXT")  # a running header on every page
        for title, size in titles:
            pdf.set_font("helvetica", "B", size)
            pdf.multi_cell(0, 10, title, new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("helvetica", size=30)
        pdf.write(12, text[0])  # a large initial opens the paragraph
        pdf.set_font("helvetica", size=11)
        pdf.write(6, text[1:] + text * 5)
        pdf.ln(8)
        pdf.set_font("helvetica", size=8)
        pdf.multi_cell(0, 4, "Footnote: small print under the section.")
    path = tmp_path / "notes.pdf"
    pdf.output(str(path))
    sections = [(p.page, p.sections) for p in load(path).pages]
    assert sections == [(1, [(1, "Field Notes on the Alpine Marmot")]), (2, [(2, "Hibernation")]),
                        (3, [(3, "Heart rate")]), (4, [(2, "Whistles")]), (5, [(3, "4.1 Calls"), (3, "4.2 Alarms")])]
    by_page = {c.page: c.heading for c in chunker.split(load(path), "notes.pdf")}
    assert by_page == {1: "Field Notes on the Alpine Marmot", 2: "Field Notes on the Alpine Marmot > Hibernation",
                       3: "Field Notes on the Alpine Marmot > Hibernation > Heart rate",
                       4: "Field Notes on the Alpine Marmot > Whistles",
                       5: "Field Notes on the Alpine Marmot > Whistles > 4.2 Alarms"}


def test_numbered_heading_lines_in_plain_text():
    text = ("5 Software\n\nSome words here.\n\n5.12 Where is the backup tool?\n\nIn /usr/sbin.\n\n"
            "1. Open the lid.\n2. Remove the bin, then rinse it.\nChapter 3: Installing\n"
            "2.5.1. Optional Features of the pdfhref Macro . .................. 7\n"  # contents entries
            "2.4 Creating a Document Outline . 5\n"
            "2 columns: x y\n")  # a title starting in lower case: a table's line, not a heading
    found = [(h.level, h.title) for h in text_headings(text)]
    assert found == [(1, "5 Software"), (2, "5.12 Where is the backup tool?"), (1, "Chapter 3: Installing")]
    # LaTeX sets a chapter's contents line without a leader: known by the leader lines beside it
    contents = ("Contents\n1 Introduction 6\n1.1 Linear programming problem . . . . . . . 6\n"
                "1.2 Model objects . . . . . . . . 7\n2 Coding model description 8\n\n"
                "1 Introduction\n\nbody text\n\nmore text\n\n2.3 Python 3\n\nSome words.\n")
    assert [h.title for h in text_headings(contents)] == ["1 Introduction", "2.3 Python 3"]
    assert [h.title for h in markdown_headings("Title\n=====\n\nSub\n---\n")] == ["Title", "Sub"]


def test_running_headers_are_not_headings():
    """A heading line on three pages or more, its page number at either end aside, is a running header."""
    pages = [text_headings(f"{n} Marmot Notes\nChapter 4: Shell Builtins {n + 1}\n4.{n} Alarm number {n}\n")
             for n in (10, 12, 14)]
    assert [[h.title for h in page] for page in drop_running_headers(pages)] == [
        ["4.10 Alarm number 10"], ["4.12 Alarm number 12"], ["4.14 Alarm number 14"]]
    two = drop_running_headers(pages[:2])  # on two pages only: kept
    assert [h.title for h in two[0]] == ["10 Marmot Notes", "Chapter 4: Shell Builtins 11", "4.10 Alarm number 10"]


def test_heading_path_closes_deeper_levels():
    path = HeadingPath()
    for heading in (Heading(0, 1, "Guide"), Heading(5, 2, "A"), Heading(9, 3, "A.1"), Heading(20, 2, "B")):
        path.enter(heading)
    assert path.path() == "Guide > B"


def test_the_heading_is_stored_indexed_and_shown(sample_collection, embedder):
    from rag.prompts import format_context
    from rag.retriever import Retriever

    hits = Retriever(sample_collection, embedder).search("Visiting the gallery", k=3, mode="bm25")
    visiting = next(h for h in hits if h.heading.endswith("> Visiting"))
    assert visiting.heading == "The Korvik Island Lighthouse > Visiting"
    assert "section: The Korvik Island Lighthouse > Visiting" in format_context([visiting])


@pytest.mark.parametrize("long", [True])
def test_a_long_heading_path_never_truncates_the_text(chunker, tmp_path, long):
    doc = tmp_path / "deep.md"
    titles = [f"{'#' * (n + 1)} Level {n} " + "heading words " * 12 for n in range(6)]
    body = "The actual text of the deepest section, which must be embedded whole. " * 30
    doc.write_text("\n\n".join(titles) + "\n\n" + body)
    for chunk in chunker.split(load(doc), "deep.md"):
        assert chunker.count_tokens(chunk.indexed) <= chunker.limit + 2  # specials included: fits the embedder


def test_outline_titles_are_found_whatever_separates_their_words_in_the_text():
    # GLPK's graphs.pdf: the outline writes "glp_read_ccdata ... coloringformat"; its page sets the
    # underscores as rules (no glyph) and breaks the line between "coloring" and "format"
    text = ("1.4.2 glp write graph — write graph to text file\nSynopsis\n...\n"
            "1.4.3 glp read ccdata — read graph from text file in DIMACS clique/coloring\nformat\nSynopsis\n")
    titles = [(2, "glp_write_graph — write graph to text file"),
              (2, "glp_read_ccdata — read graph from text file in DIMACS clique/coloringformat"), (2, "C++")]
    found = locate(text, titles)
    assert [h.offset for h in found][:2] == [text.index("glp write"), text.index("glp read")]
    assert found[2].offset == text.index("\nSynopsis", found[1].offset)  # "C++" is missing: where the last one ended
    assert [h.title for h in found][:2] == [t for _, t in titles[:2]]  # the outline's own words are shown
