"""Headings: where each section of a page starts, so chunks can carry their heading path.

A page's headings are (offset in the page text, level, title) triples, found by format:
- Markdown: ATX (`## Title`) and setext (a line underlined with === or ---) headings;
- HTML: the h1-h6 elements, located in the text the page was rendered to;
- PDF: the outline's titles for the page (pypdf/pdfium bookmarks), located in its text, plus the
  numbered heading lines of plain text;
- plain text: numbered heading lines ("5.12 Where is the backup tool?", "Chapter 3 Software"),
  lines underlined with === or ---.
`HeadingPath` keeps the path ("Admin Guide > 5 Software > 5.12 Backups") as the pages are read.
It does not chunk or embed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SEPARATOR = " > "
_ATX = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$", re.M)
_SETEXT = re.compile(r"^(?P<title>[^\n]{2,120})\n(?P<rule>=+|-+)[ \t]*$", re.M)
# "5 Software", "5.12 Where is the backup tool?", "Chapter 3: Installing" - short, capitalised, not a
# sentence (no final period), at most 12 words.
_NUMBERED = re.compile(
    r"^(?P<title>(?:(?:chapter|section|part|appendix)\s+[0-9A-Z]+[.:]?|\d{1,2}(?:\.\d{1,3}){0,4}\.?)"
    r"[ \t]+[A-Z\"'(][^\n]{0,100}?)[ \t]*$", re.M | re.I)
_CODE_FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)


@dataclass(frozen=True)
class Heading:
    offset: int  # where the heading starts in the page text
    level: int  # 1 = top
    title: str


def markdown_headings(text: str) -> list[Heading]:
    fenced = [(m.start(), m.end()) for m in _CODE_FENCE.finditer(text)]

    def in_code(at: int) -> bool:
        return any(start <= at < end for start, end in fenced)

    found = [Heading(m.start(), len(m[1]), _clean(m[2])) for m in _ATX.finditer(text) if not in_code(m.start())]
    found += [Heading(m.start(), 1 if m["rule"][0] == "=" else 2, _clean(m["title"]))
              for m in _SETEXT.finditer(text) if not in_code(m.start()) and not m["title"].lstrip().startswith("#")
              and len(m["rule"]) >= 3]
    return sorted(found, key=lambda h: h.offset)


def text_headings(text: str) -> list[Heading]:
    """Numbered heading lines and underlined lines of plain text (also used on PDF pages)."""
    found = []
    for m in _NUMBERED.finditer(text):
        title = _clean(m["title"])
        if title.endswith((".", ",", ";", ":")) or len(title.split()) > 12:
            continue  # a numbered sentence or list item, not a heading
        number = title.split()[0].rstrip(".:")
        level = number.count(".") + 1 if number[0].isdigit() else 1
        found.append(Heading(m.start(), level, title))
    found += [Heading(m.start(), 1 if m["rule"][0] == "=" else 2, _clean(m["title"]))
              for m in _SETEXT.finditer(text) if len(m["rule"]) >= 3]
    return sorted(found, key=lambda h: h.offset)


def locate(text: str, titles: list[tuple[int, str]]) -> list[Heading]:
    """(level, title) pairs in reading order, found in `text` one after the other (whitespace-
    insensitively); a title that cannot be found is placed where the previous one was."""
    found, cursor = [], 0
    for level, title in titles:
        words = title.split()
        if not words:
            continue
        pattern = re.compile(r"\s+".join(re.escape(w) for w in words), re.I)
        match = pattern.search(text, cursor)
        at = match.start() if match else cursor
        found.append(Heading(at, level, _clean(title)))
        cursor = match.end() if match else cursor
    return found


def _clean(title: str) -> str:
    return " ".join(title.replace("*", "").replace("`", "").split()).strip()


class HeadingPath:
    """The open headings, top level first, updated as each heading is passed."""

    def __init__(self) -> None:
        self._open: list[Heading] = []

    def enter(self, heading: Heading) -> None:
        self._open = [h for h in self._open if h.level < heading.level] + [heading]

    def path(self) -> str:
        return SEPARATOR.join(h.title for h in self._open)
