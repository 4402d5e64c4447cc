"""HTML to text: inscriptis for the layout, with a flat fallback that never loses text.

inscriptis renders the tree lxml parses (tables, lists, blocks) well, but libxml2 stops building the
tree about 255 levels deep (2048 with `huge_tree`) and inscriptis recurses once per level, so text
inside and after a very deep element is lost or the walk fails. Each page is therefore also read
by the standard library's streaming parser, which has no depth limit; when inscriptis kept
noticeably fewer words, the streaming text is used and a warning says so. It does not fetch
anything a page links to.
"""

from __future__ import annotations

from html.parser import HTMLParser

# Elements whose content is not text a reader sees.
_SKIP = {"script", "style", "template", "noscript", "head", "title"}
# Elements that start a new line when read flat.
_BLOCK = {"p", "div", "br", "li", "ul", "ol", "table", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "pre",
          "section", "article", "header", "footer", "blockquote", "dd", "dt", "hr", "td", "th"}


_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}


class _FlatText(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.headings: list[tuple[int, str]] = []  # (level, title) in document order
        self._skipping = 0
        self._heading: tuple[int, list[str]] | None = None

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag in _SKIP:
            self._skipping += 1
        elif tag in _BLOCK:
            self.parts.append("\n")
        if tag in _HEADINGS and self._heading is None:
            self._heading = (_HEADINGS[tag], [])

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self._skipping = max(0, self._skipping - 1)
        elif tag in _BLOCK:
            self.parts.append("\n")
        if tag in _HEADINGS and self._heading is not None:
            title = " ".join("".join(self._heading[1]).split())
            if title:
                self.headings.append((self._heading[0], title))
            self._heading = None

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)
            if self._heading is not None:
                self._heading[1].append(data)


def flat_text(html: str) -> str:
    """The text of an HTML page, block elements on their own lines, without any tree."""
    parser = _FlatText()
    parser.feed(html)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
    return "\n".join(line for line in lines if line)


def html_headings(html: str) -> list[tuple[int, str]]:
    """(level, title) of the page's h1-h6 elements, in document order."""
    parser = _FlatText()
    parser.feed(html)
    parser.close()
    return parser.headings


def html_to_text(html: str) -> tuple[str, list[str]]:
    """(text, warnings): inscriptis' layout when it kept the page's words, else the flat text."""
    import lxml.html
    from inscriptis import Inscriptis
    from inscriptis.model.config import ParserConfig

    flat = flat_text(html)
    try:
        tree = lxml.html.document_fromstring(html, parser=lxml.html.HTMLParser(huge_tree=True))
        text = Inscriptis(tree, ParserConfig()).get_text()
    except RecursionError:
        return flat, ["HTML nested too deep for layout; read as flat text"]
    except Exception:  # lxml refuses some inputs (e.g. only a comment); the flat text stands
        return flat, []
    if len(text.split()) < 0.9 * len(flat.split()):
        return flat, ["HTML nested too deep for layout (text would be lost); read as flat text"]
    return text, []
