"""Headings: where each section of a page starts, so chunks can carry their heading path.

A page's headings are (offset in the page text, level, title) triples, found by format:
- Markdown: ATX (`## Title`) and setext (a line underlined with === or ---) headings;
- HTML: the h1-h6 elements, located in the text the page was rendered to;
- PDF: the outline's titles for the page (pypdf/pdfium bookmarks), or the lines set in larger type
  (rag/pdf.py), located in its text, plus the numbered heading lines of plain text at deeper levels
  than those (running headers left out: `drop_running_headers`);
- plain text: numbered heading lines ("5.12 Where is the backup tool?", "Chapter 3 Software"),
  lines underlined with === or ---.
`HeadingPath` keeps the path ("Admin Guide > 5 Software > 5.12 Backups") as the pages are read.
It does not chunk or embed. Finding a page's headings takes time linear in its length.
"""

from __future__ import annotations

import bisect
import itertools
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

SEPARATOR = " > "
# The title's closing run of spaces and #s is stripped in Python (`_atx_title`): a lazy title followed
# by `[ \t#]*$` backtracks over that run once per character, quadratic in a long line of #s.
_ATX = re.compile(r"^(#{1,6})[ \t]+([^\n]+)$", re.M)
_SETEXT = re.compile(r"^(?P<title>[^\n]{2,120})\n(?P<rule>=+|-+)[ \t]*$", re.M)
# "5 Software", "5.12 Where is the backup tool?", "Chapter 3: Installing" - short, capitalised, not a
# sentence (no final period), at most 12 words.
# Only the word "chapter" etc. is read in any case: a line whose title starts in lower case ("2 columns:
# x y") is not a heading.
_NUMBERED = re.compile(
    r"^(?P<title>(?:(?i:chapter|section|part|appendix)\s+[0-9A-Z]+[.:]?|\d{1,2}(?:\.\d{1,3}){0,4}\.?)"
    r"[ \t]+[A-Z\"'(][^\n]{0,100}?)[ \t]*$", re.M)
_CONTENTS_ENTRY = re.compile(r"(?:\.[ \t]*){4,}\d*$|[ \t]\.[ \t]*\d+$")  # "... 7", ". 7": dot leader, page
_PAGE_NUMBER = re.compile(r"[ \t]\d+$")  # "1 Introduction 6": a contents line without a leader, by its neighbours
CONTENTS_NEIGHBOURS = 3  # lines either side of it, one of which must be a dot-leader contents line
_CODE_FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
# A longer title (all of a long line after "#", a huge <h1>) is cut: a chunk's heading path keeps
# at most HEADING_MAX_TOKENS (rag/chunking.py) of it, and each section's path is tokenized.
MAX_TITLE_CHARS = 500
# locate(): a title missing from the text costs a scan of the rest of it. After this many misses,
# titles are looked for only within LOCATE_WINDOW times the mean spacing of the page's titles.
LOCATE_FULL_MISSES = 8
LOCATE_WINDOW = 16
MIN_TOLERANT = 4  # letters and digits a title needs to be matched whatever separates them (_title_pattern)
# A heading line found on this many pages of a PDF, page numbers aside, is a running header: Texinfo
# sets "Chapter 4: Shell Builtin Commands 50" atop every page of chapter 4.
RUNNING_HEADER_PAGES = 3
_FOLIO = re.compile(r"^\d+\s+|\s+\d+$")  # a page number at either end of a header line ("50 Manual", "Manual 51")


@dataclass(frozen=True)
class Heading:
    offset: int  # where the heading starts in the page text
    level: int  # 1 = top
    title: str


def markdown_headings(text: str) -> list[Heading]:
    fenced = [(m.start(), m.end()) for m in _CODE_FENCE.finditer(text)]  # in order, apart
    fence_starts = [start for start, _ in fenced]

    def in_code(at: int) -> bool:
        i = bisect.bisect_right(fence_starts, at) - 1
        return i >= 0 and at < fenced[i][1]

    found = [Heading(m.start(), len(m[1]), _clean(_atx_title(m[2])))
             for m in _ATX.finditer(text) if not in_code(m.start())]
    found += [Heading(m.start(), 1 if m["rule"][0] == "=" else 2, _clean(m["title"]))
              for m in _SETEXT.finditer(text) if not in_code(m.start()) and not m["title"].lstrip().startswith("#")
              and len(m["rule"]) >= 3]
    return sorted(found, key=lambda h: h.offset)


def _atx_title(rest: str) -> str:
    """An ATX heading line after its #s and spaces, less its closing spaces and #s (at least one
    character stays, as a lazy `.+?` would keep)."""
    return rest[:max(1, len(rest.rstrip(" \t#")))]


def text_headings(text: str) -> list[Heading]:
    """Numbered heading lines and underlined lines of plain text (also used on PDF pages)."""
    found = []
    line_starts: list[int] = []  # of the lines of a table of contents with a dot leader, found lazily
    leader_lines: list[int] = []
    for m in _NUMBERED.finditer(text):
        title = _clean(m["title"])
        if title.endswith((".", ",", ";", ":")) or len(title.split()) > 12:
            continue  # a numbered sentence or list item, not a heading
        if _CONTENTS_ENTRY.search(title):
            continue  # a line of the table of contents: the heading itself is on its page
        if _PAGE_NUMBER.search(title):
            if not line_starts:
                lines = text.split("\n")
                line_starts = list(itertools.accumulate((len(line) + 1 for line in lines[:-1]), initial=0))
                leader_lines = [n for n, line in enumerate(lines) if _CONTENTS_ENTRY.search(line.rstrip())]
            line = bisect.bisect_right(line_starts, m.start()) - 1
            near = bisect.bisect_left(leader_lines, line - CONTENTS_NEIGHBOURS)
            if near < len(leader_lines) and leader_lines[near] <= line + CONTENTS_NEIGHBOURS:
                continue  # a chapter's contents line ("1 Introduction 6"), which LaTeX sets without a leader
        number = title.split()[0].rstrip(".:")
        level = number.count(".") + 1 if number[0].isdigit() else 1
        found.append(Heading(m.start(), level, title))
    found += [Heading(m.start(), 1 if m["rule"][0] == "=" else 2, _clean(m["title"]))
              for m in _SETEXT.finditer(text) if len(m["rule"]) >= 3]
    return sorted(found, key=lambda h: h.offset)


def running_key(title: str) -> str:
    """What a running header keeps from page to page: the line less a page number at either end."""
    return _FOLIO.sub("", title).casefold()


def running_headers(pages: Iterable[Iterable[str]]) -> set[str]:
    """The `running_key`s of the titles found on RUNNING_HEADER_PAGES pages or more (one iterable of
    titles a page)."""
    pages_of = Counter(key for titles in pages for key in {running_key(title) for title in titles})
    return {key for key, n in pages_of.items() if n >= RUNNING_HEADER_PAGES}


def drop_running_headers(pages: list[list[Heading]]) -> list[list[Heading]]:
    """Each page's headings less the running headers (`running_headers`): a running header looks like
    a numbered heading, and taken for one it would reset every page's heading path to its chapter."""
    running = running_headers([h.title for h in headings] for headings in pages)
    return [[h for h in headings if running_key(h.title) not in running] for headings in pages]


def locate(text: str, titles: list[tuple[int, str]]) -> list[Heading]:
    """(level, title) pairs in reading order, found in `text` one after the other (by their letters
    and digits: `_title_pattern`); a title that cannot be found is placed where the previous one was.

    Each found title moves the cursor on, but a missing one is searched for to the end of the
    text: after LOCATE_FULL_MISSES misses, the search stops LOCATE_WINDOW mean title spacings
    past the cursor, so that a page of titles its text lacks is not quadratic in its length."""
    found, cursor, misses = [], 0, 0
    window = LOCATE_WINDOW * len(text) // max(1, len(titles))
    for level, title in titles:
        pattern = _title_pattern(title[:4 * MAX_TITLE_CHARS])
        if pattern is None:
            continue
        end = len(text)
        if misses >= LOCATE_FULL_MISSES:
            end = min(end, cursor + len(title) + window)
        match = pattern.search(text, cursor, end)
        misses += match is None
        at = match.start() if match else cursor
        found.append(Heading(at, level, _clean(title)))
        cursor = match.end() if match else cursor
    return found


def _title_pattern(title: str) -> re.Pattern | None:
    """A title as it may be set in the text: its letters and digits in order, anything but letters and
    digits (or nothing) between them. Outlines and <h> elements often differ from the text there: an
    outline's "glp_read_ccdata ... coloringformat" is set "glp read ccdata ... coloring\nformat" (the
    underscores drawn as rules, the line break lost), a heading's <br> renders as a line break. A title
    with fewer than MIN_TOLERANT letters and digits ("C++") keeps its words, any whitespace between."""
    letters = [char for char in title if char.isalnum()]
    if len(letters) >= MIN_TOLERANT:
        return re.compile(r"[\W_]*".join(re.escape(char) for char in letters), re.I)
    words = title.split()
    return re.compile(r"\s+".join(re.escape(w) for w in words), re.I) if words else None


def _clean(title: str) -> str:
    # cut before the whitespace is collapsed: split() of a 50 MB "title" is a list of all its words
    return " ".join(title[:4 * MAX_TITLE_CHARS].replace("*", "").replace("`", "").split())[:MAX_TITLE_CHARS].strip()


class HeadingPath:
    """The open headings, top level first, updated as each heading is passed."""

    def __init__(self) -> None:
        self._open: list[Heading] = []

    def enter(self, heading: Heading) -> None:
        self._open = [h for h in self._open if h.level < heading.level] + [heading]

    def path(self) -> str:
        return SEPARATOR.join(h.title for h in self._open)
