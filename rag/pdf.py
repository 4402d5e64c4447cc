"""PDF extraction: each page's text with its words kept apart, and the outline's titles per page.

pypdfium2 reads every page: it is fast, keeps ligatures and kerned words whole, and gives the
outline with page numbers. Some producers set words apart by a small shift instead of a space glyph
(LaTeX's tight justified lines, DocBook via dblatex, Ghostscript), and then pdfium, like pypdf,
glues them: "thepackageisavailableforGNU/Linuxfrom". Such lines are found one by one
(`line_glued`), and pdfminer.six, which places word gaps by glyph geometry, re-reads their pages;
its gaps are inserted into pdfium's line (`respace_page`), which keeps pdfium's characters and
order. Short glued words ("anyother") do not show on a line, so pdfminer also reads two sample
pages, and a file where it finds many missing gaps is re-spaced throughout. A word that
never stands alone in pdfium's text ("they" in "theyare") is confirmed by pdfminer's text, where it
has different neighbours on both sides, unlike a kerning split's piece. Words hyphenated at a
line's end are then joined again (`dehyphenate`), and footnote numbers set apart from the word they
touch (`split_footnote_marks`). Before all that, pdfium's text gets a space where a subscript or
superscript ends against the next symbol ("ai1xm+1" for a_i1 x_m+1), as pdftotext sets it
(`set_scripts_apart`). A page pdfium cannot load is read with pypdf. Every parser error, from any
of the three, ends as one `PdfError` line.

A PDF without an outline (most word processors' and report generators' output) gets its section
titles from the type size (`font_headings`): a short line set larger than the body text is a
heading, and the larger its type, the higher its level, as pymupdf4llm and marker read headings.

It does not decode text files, repair mojibake, chunk or embed; rag/loading.py turns a `PdfText`
into a Document.
"""

from __future__ import annotations

import io
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from functools import cache
from itertools import pairwise

from rag.headings import running_headers, running_key

# Letters of the scripts that separate words with spaces. Chinese, Japanese and Thai lines run
# without spaces by design and are never taken for glued.
_SPACED_LETTERS = "A-Za-z\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f\u0370-\u03ff\u0400-\u04ff"
_LETTER = re.compile(f"[{_SPACED_LETTERS}]")
GLUED_RUN = 20  # letters in a row: English words this long are rare ("internationalization")
# A line with no space at all between many letters ("FrançoisBobot,Jean-ChristopheFilliâtre,...")
# is glued too, unless it looks like code, a path or a URL, which run without spaces by design.
GLUED_LETTERS_PER_WORD = 12.0  # prose averages about 5
MIN_LETTERS = 30
_CODE = re.compile(r"[_=(){}\[\]<>\\/@:;|*#$%&+~^\"]")
_GLUED_RUN = re.compile(f"[{_SPACED_LETTERS}]{{{GLUED_RUN},}}")
FREE_WORD_NEIGHBOURS = 2  # different words on each side of a word in pdfminer's text: a word of its own
FREQUENT_WORD = 5  # times a word stands on its own in the document to count as common beside a glued word
SAMPLE_PAGES = 2
SAMPLE_FROM = 30  # pdfminer walks the page tree from the start: early pages are cheaper
SHORT_GLUE_RATE = 0.005  # a gap pdfminer finds every 200 words of the sample: the producer glues words
_PUNCTUATION = ("".join(chr(c) for c in range(0x20, 0x7F) if not chr(c).isalnum())
                + "\u2018\u2019\u201c\u201d\u00ab\u00bb\u2013\u2014\u2026\u00ae\u2122")
MAX_REASON = 200  # characters of a parser's message kept in a one-line error
# A line whose type is this much larger than the body text's is a heading: LaTeX sets a subsection
# (\large) in 12 pt over an 11 pt body, 1.09 times; a footnote or a superscript is smaller, never larger.
HEADING_SIZE = 1.08
HEADING_SHARE = 0.9  # of a heading line's printed characters in heading type (not a large initial)
MAX_HEADING_WORDS = 20
MAX_HEADING_LEVELS = 4  # distinct heading sizes ranked; smaller ones join the last level
SCRIPT_SIZE = 0.85  # a character this much smaller than the next one, on another baseline, is a script
SCRIPT_SHIFT = 0.1  # of the next character's size: the baseline difference that marks a script
_CLOSING = frozenset(")]},.;:!?'\"\u2019\u201d")
_SECTION_NUMBER = re.compile(r"\d+(?:\.\d+)*\.?\s")  # "2.4.1. A Basic Document Outline"
_CAPTION = re.compile(r"(?:Figure|Fig\.|Table|Listing)\s+[\dIVXA-Z]+(?:[-.]\d+)*\s*[:.]", re.I)


class PdfError(Exception):
    """The PDF cannot be read. The message is one line giving the reason, without the file name."""


@dataclass
class PdfPage:
    text: str
    number: int  # 1-based
    sections: list[tuple[int, str]] = field(default_factory=list)  # (level, title) starting here; level 1 = top


@dataclass
class PdfText:
    pages: list[PdfPage]
    warnings: list[str] = field(default_factory=list)


def line_glued(line: str) -> bool:
    """True when a line looks like words run together: a run of 20+ letters, or, outside code,
    paths and URLs, 30+ letters at 12+ letters a word."""
    if _GLUED_RUN.search(line):
        return True
    letters = len(_LETTER.findall(line))
    return (letters >= MIN_LETTERS and letters / len(line.split()) >= GLUED_LETTERS_PER_WORD
            and not _CODE.search(line))


def glued_lines(text: str) -> list[int]:
    """Indexes of the lines of `text` that look glued."""
    return [i for i, line in enumerate(text.split("\n")) if line_glued(line)]


def extraction_failed(text: str) -> bool:
    """True when a page's text is empty or has at least one line that lost its inter-word spaces."""
    return not text.strip() or bool(glued_lines(text))


def read_pdf(data: bytes) -> PdfText:
    """Extract every page's text and the outline; raise PdfError (one line) when nothing can be read."""
    warnings: list[str] = []
    try:
        texts, errors, toc = _read_pdfium(data)
    except PdfError:
        raise
    except Exception as exc:  # pdfium cannot open the file: pypdf reads some damage pdfium won't
        first = _reason("pypdfium2", exc)
        try:
            found, errors = _read_pypdf(data, None)
        except PdfError:
            raise
        except Exception:
            raise PdfError(f"not a readable PDF ({first})") from None
        if not found:
            raise PdfError(f"not a readable PDF ({first})")
        texts = [found.get(i, "") for i in range(len(found) + len(errors))]
        toc = []
        warnings.append(f"read with pypdf: pypdfium2 could not open the file ({first})")
    else:
        if errors:  # pages pdfium could not load: pypdf's try
            try:
                found, errors = _read_pypdf(data, sorted(errors))
            except Exception:
                found = {}
            for i, text in found.items():
                texts[i] = text
    if errors and len(errors) == len(texts):
        raise PdfError(f"not a readable PDF ({next(iter(errors.values()))})")
    if errors:
        numbers = ", ".join(str(i + 1) for i in sorted(errors)[:10]) + (", ..." if len(errors) > 10 else "")
        warnings.append(f"{len(errors)} unreadable page(s) left empty ({numbers}): {next(iter(errors.values()))}")
    try:
        spaces, pages, note = _respace(data, texts)
    except Exception as exc:  # re-spacing is an improvement; its failure must not cost the file
        spaces, pages, note = 0, 0, f"word gaps not checked ({_reason('pdfminer', exc)})"
    if spaces:
        warnings.append(f"{spaces} missing word gap(s) on {pages} page(s) restored with pdfminer.six")
    vocabulary = _vocabulary(texts)  # of the re-spaced text (re-spacing aligns the printed characters: it comes first)
    texts = [split_footnote_marks(dehyphenate(t, vocabulary), vocabulary) for t in texts]
    if note:
        warnings.append(note)
    sections: dict[int, list[tuple[int, str]]] = {}
    for index, level, title in toc:
        if 0 <= index < len(texts):
            sections.setdefault(index, []).append((level, title))
    return PdfText([PdfPage(t, i + 1, sections.get(i, [])) for i, t in enumerate(texts)], warnings)


# a word broken by a hyphen at a line's end, its rest at the next line's start with any punctuation
# that follows it, and the spaces after that
_LINE_END_HYPHEN = re.compile(r"\b([^\W\d_]+)-\n([ \t]*)([^\W\d_]+(?:-[^\W\d_]+)*)(?![\w-])([^\s\w-]*)([ \t]*)")
_COMPOUND_PART = re.compile(r"[-/@:._\\]")  # in a token before the broken word: a compound, URL or path


def dehyphenate(text: str, vocabulary: Counter[str]) -> str:
    r"""Words hyphenated across a line break made whole again ("pro-\ngram" -> "program\n"), so that
    BM25 and the embedder see the word. Only between lower-case letters ("LU-\nfactorization" stays).
    The hyphen stays in a compound the document also prints hyphenated mid-line and never joined
    ("hot-\nspot" -> "hot-spot"), and in the last part of a longer compound, URL or path
    ("state-of-the-\nart", "https://example.org/some-\npage"). The word moves up to the first line
    with its punctuation; the rest of the next line stays where it was."""
    def join(match: re.Match) -> str:
        left, indent, right, punctuation, _ = match.groups()
        if not (left[-1].islower() and right[0].islower()):
            return match.group()
        joined, compound = left + right, f"{left}-{right}"
        head = match.string[max(0, match.start() - 200):match.start()]
        before = "" if not head or head[-1].isspace() else head.split()[-1]  # the token's part before `left`
        if _COMPOUND_PART.search(before) or (vocabulary[compound.lower()] and not vocabulary[joined.lower()]):
            word = compound
        else:
            word = joined
        rest = match.string[match.end():match.end() + 1]
        return f"{word}{punctuation}" + ("" if rest in ("", "\n") else f"\n{indent}")

    return _LINE_END_HYPHEN.sub(join, text)


_FOOTNOTE_MARK = re.compile(r"^([ \t]*)(\d{1,2})([A-Z][a-z]+)\b", re.MULTILINE)


def split_footnote_marks(text: str, vocabulary: Counter[str]) -> str:
    """A footnote's number set apart from its first word at a line's start ("2This" -> "2 This"): the
    raised, smaller digit sits right against the word, with no gap for any extractor to see. Only
    where the word also occurs elsewhere in the document, so that names like "3Com" stay whole."""
    def split(match: re.Match) -> str:
        indent, number, word = match.groups()
        return f"{indent}{number} {word}" if vocabulary[word.lower()] else match.group()

    return _FOOTNOTE_MARK.sub(split, text)


def _reason(library: str, exc: BaseException) -> str:
    message = " ".join(str(exc).split())[:MAX_REASON] or "no message"
    return f"{library}: {type(exc).__name__}: {message}"


def _clean_pdfium(text: str) -> str:
    # pdfium ends lines with \r\n and joins a word hyphenated across a line break, marking the
    # hyphen with \x02 (\ufffe in get_text_range): put the hyphen and the break back as printed.
    return (text.replace("\r\n", "\n").replace("\r", "\n").replace("\x02", "-\n")
            .replace("\ufffe", "-\n").replace("\x00", ""))


def _read_pdfium(data: bytes) -> tuple[list[str], dict[int, str], list[tuple[int, int, str]]]:
    """(texts, {page index: error}, [(page index, level, title)]); raises when the file won't open."""
    import pypdfium2 as pdfium

    try:
        pdf = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        if "password" in str(exc).lower():
            raise PdfError("encrypted PDF (a password is required)") from None
        raise
    try:
        try:
            toc = _outline(pdf)
        except Exception:  # a damaged outline costs the section titles, not the text
            toc = []
        texts: list[str] = []
        errors: dict[int, str] = {}
        sized: list[list[tuple[str, float]]] = []  # without an outline: each page's lines and type sizes
        for i in range(len(pdf)):
            try:
                page = pdf[i]
                try:
                    textpage = page.get_textpage()
                    # Bounded to the page box, as a reader sees it; no layout analysis, see above.
                    text = _clean_pdfium(textpage.get_text_bounded())
                    chars = page_chars(textpage)
                    text = set_scripts_apart(text, textpage, chars)
                    lines = [] if toc else sized_lines(chars)
                    textpage.close()
                finally:
                    page.close()
            except Exception as exc:  # "Failed to load page" on damaged page objects
                text, lines = "", []
                errors[i] = _reason("pypdfium2", exc)
            texts.append(text)
            sized.append(lines)
        return texts, errors, toc or font_headings(sized)
    finally:
        pdf.close()


def _outline(pdf) -> list[tuple[int, int, str]]:
    """(page index, level, title) for each bookmark that points at a page, in outline order."""
    out = []
    for bookmark in pdf.get_toc():
        dest = bookmark.get_dest()
        page = dest.get_index() if dest is not None else None
        title = " ".join(bookmark.get_title().split())
        if page is not None and title:
            out.append((page, bookmark.level + 1, title))
    return out


def page_chars(textpage) -> list[tuple[str, float]]:
    """Each character of a pypdfium2 text page (pdfium's own spaces and line breaks included) with
    its type size in points (0 for whitespace)."""
    import pypdfium2.raw as pdfium_c

    raw, count, size_of = textpage.raw, textpage.count_chars(), pdfium_c.FPDFText_GetFontSize
    text = textpage.get_text_range(0, count)  # one call; one code unit a character within the BMP
    if len(text) != count:  # characters beyond the BMP (math letters, emoji): one at a time
        text = "".join(chr(pdfium_c.FPDFText_GetUnicode(raw, i)) for i in range(count))
    return [(char, 0.0 if char.isspace() else size_of(raw, i)) for i, char in enumerate(text)]


def sized_lines(chars: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """A page's lines (from `page_chars`), each with the type size of most of its printed characters."""
    lines: list[tuple[str, float]] = []
    line: list[str] = []
    sizes: Counter[float] = Counter()
    for char, size in chars:
        if char in "\r\n":
            if sizes:
                lines.append(("".join(line), _main_size(sizes)))
            line, sizes = [], Counter()
            continue
        line.append(char)
        if not char.isspace():
            sizes[round(size * 2) / 2] += 1  # half points
    if sizes:
        lines.append(("".join(line), _main_size(sizes)))
    return lines


def set_scripts_apart(text: str, textpage, chars: list[tuple[str, float]]) -> str:
    """`text` (the page's) with a space where a subscript or superscript ends against the next
    character, as pdftotext sets it: "ai1xm+1" -> "ai1 xm+1" (a with subscript i1, x with m+1).
    After closing punctuation the space goes after it: "(xB)k" -> "(xB) k".
    A script is a character at most SCRIPT_SIZE of the next one's size, on another baseline; its
    start is left alone ("xB"), as pdftotext leaves it, and so is a digit or capital before a capital:
    chemical formulas ("H2O") and the LaTeX logo stay whole."""
    import ctypes

    import pypdfium2.raw as pdfium_c

    x, y = ctypes.c_double(), ctypes.c_double()

    def baseline(i: int) -> float:
        pdfium_c.FPDFText_GetCharOrigin(textpage.raw, i, x, y)
        return y.value

    ends: list[int] = []  # indexes into the printed characters (whitespace left out)
    printed = -1
    for i, (char, size) in enumerate(chars):
        if char.isspace():
            continue
        printed += 1
        if i == 0 or not chars[i - 1][0].isalnum() or size <= 0:
            continue
        if chars[i - 1][1] > SCRIPT_SIZE * size or abs(baseline(i - 1) - baseline(i)) < SCRIPT_SHIFT * size:
            continue
        if char.isupper() and (chars[i - 1][0].isdigit() or chars[i - 1][0].isupper()):
            continue  # a formula ("H2O", "Fe2O3") or a logo ("LaTeX" with its raised A): one word
        j, at = i, printed
        while j < len(chars) and chars[j][0] in _CLOSING:
            j, at = j + 1, at + 1
        if j < len(chars) and not chars[j][0].isspace() and chars[j][0] not in _CLOSING:
            ends.append(at)
    if not ends:
        return text
    own = "".join(char for char, _ in chars if not char.isspace()).replace("\x02", "-").replace("\ufffe", "-")
    squeezed = [(k, ch) for k, ch in enumerate(text) if not ch.isspace()]
    if own != "".join(ch for _, ch in squeezed):
        return text  # the bounded text left characters out: no safe way to place the gaps
    out = text
    for at in sorted(set(ends), reverse=True):
        k = squeezed[at][0]
        if not out[k - 1].isspace():
            out = out[:k] + " " + out[k:]
    return out


def _main_size(sizes: Counter[float]) -> float:
    """The size of at least HEADING_SHARE of the characters, else the smallest size: a line of body
    text with a large initial or a larger symbol is not a heading."""
    size, count = sizes.most_common(1)[0]
    return size if count >= HEADING_SHARE * sum(sizes.values()) else min(sizes)


def font_headings(pages: list[list[tuple[str, float]]]) -> list[tuple[int, int, str]]:
    """(page index, level, title) of the lines set in larger type than the body text (the size most
    characters have). Adjacent lines of one size are one title set on several lines, unless a line
    starts with a section number; a run of more than MAX_HEADING_WORDS words is a paragraph set
    large, not a heading. A line with fewer than two letters (a drop cap, a chapter's big number), a
    figure or table caption and a contents line are not headings either. The largest size is level 1,
    the next 2, and so on."""
    body: Counter[float] = Counter()
    for lines in pages:
        for text, size in lines:
            body[size] += len(text)
    if not body:
        return []
    floor = body.most_common(1)[0][0] * HEADING_SIZE
    found: list[tuple[int, float, str]] = []
    for index, lines in enumerate(pages):
        runs: list[tuple[float, list[str]]] = []
        previous = None  # the size of the line before, when it was large
        for text, size in lines:
            title = " ".join("".join(ch for ch in _clean_pdfium(text) if ch.isprintable() or ch.isspace()).split())
            if size < floor or len(_LETTER.findall(title)) < 2:
                previous = None
            elif size == previous and not _SECTION_NUMBER.match(title):
                runs[-1][1].append(title)
            else:
                runs.append((size, [title]))
                previous = size
        for size, parts in runs:
            title = " ".join(parts)
            if len(title.split()) <= MAX_HEADING_WORDS and not _CAPTION.match(title) and not _LEADER.search(title):
                found.append((index, size, title))
    titles_of: dict[int, list[str]] = {}
    for index, _, title in found:
        titles_of.setdefault(index, []).append(title)
    running = running_headers(titles_of.values())
    found = [f for f in found if running_key(f[2]) not in running]
    ranks = sorted({size for _, size, _ in found}, reverse=True)
    return [(index, min(ranks.index(size), MAX_HEADING_LEVELS - 1) + 1, title) for index, size, title in found]


def _read_pypdf(data: bytes, indexes: list[int] | None) -> tuple[dict[int, str], dict[int, str]]:
    """pypdf's text of the given 0-based pages (all when None): ({index: text}, {index: error})."""
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(data))
    if reader.is_encrypted and not reader.decrypt(""):
        raise PdfError("encrypted PDF (a password is required)")
    count = len(reader.pages)
    wanted = list(range(count)) if indexes is None else indexes
    texts: dict[int, str] = {}
    errors: dict[int, str] = {}
    for i in wanted:
        try:
            texts[i] = reader.pages[i].extract_text() or ""
        except Exception as exc:
            errors[i] = _reason("pypdf", exc)
    return texts, errors


def _respace(data: bytes, texts: list[str]) -> tuple[int, int, str]:
    """Insert, in place, the word gaps pdfminer.six sees and pypdfium2 missed; returns (spaces
    inserted, pages changed, a warning or "").

    Lines that look glued are re-spaced on their pages. Gluing of short words ("anyother",
    "aDocument", in Ghostscript output) looks like nothing on one line, so pdfminer also reads the
    SAMPLE_PAGES fullest of the first SAMPLE_FROM pages; when it finds a missing gap there every
    1 / SHORT_GLUE_RATE words, every line of every page is re-spaced.
    """
    glued = {i: lines for i, t in enumerate(texts) if (lines := glued_lines(t))}
    early = sorted(range(min(len(texts), SAMPLE_FROM)), key=lambda i: -len(_LETTER.findall(texts[i])))
    sample = [i for i in early[:SAMPLE_PAGES] if i not in glued and texts[i].strip()]
    vocabulary = _vocabulary(texts)
    try:
        alternatives = _pdfminer_pages(data, sorted(set(glued) | set(sample)))
        confirmed = _with_free_words(vocabulary, alternatives.values())
        found = sum(respace_page(texts[i], None, alternatives[i], confirmed)[1] for i in sample if i in alternatives)
        words = sum(len(texts[i].split()) for i in sample)
        short_glue = found >= 3 and found >= words * SHORT_GLUE_RATE
        if short_glue:
            alternatives.update(_pdfminer_pages(data, [i for i in range(len(texts)) if i not in alternatives]))
            confirmed = _with_free_words(vocabulary, alternatives.values())
    except Exception as exc:  # pdfminer's own parser failed: keep pdfium's text as it is
        if not glued:
            return 0, 0, ""
        lines = sum(map(len, glued.values()))
        return 0, 0, f"{lines} glued line(s) kept: pdfminer.six could not read the file ({_reason('pdfminer', exc)})"
    inserted = pages = 0
    for i in sorted(alternatives) if short_glue else sorted(glued):
        if i not in alternatives:
            continue
        text, n = respace_page(texts[i], None if short_glue else glued[i], alternatives[i], confirmed)
        if n:
            texts[i] = text
            inserted += n
            pages += 1
    return inserted, pages, ""


def respace_page(text: str, lines: list[int] | None, alternative: str, vocabulary: Counter[str]) -> tuple[str, int]:
    """Insert into the given lines of `text` (all when None) the spaces `alternative` has between
    the same characters (whitespace aside, compatibility forms folded); (text, spaces inserted).

    Only spaces are inserted, so the page keeps its characters and reading order. Within a run of
    GLUED_RUN letters every gap is taken; elsewhere a word is split only when all its pieces occur
    as words in the document (`vocabulary`, with `_with_free_words`) or one of two pieces is a common
    word (`_beside_common_word`), because pdfminer also splits kerned words ("howev er"). Contents lines are matched
    without their dot leaders, and list items without their bullets.
    """
    squeezed, where = _squeeze(alternative)
    gaps = {k for k in range(1, len(where)) if where[k] > where[k - 1] + 1}
    rows = text.split("\n")
    inserted = 0
    cursor = 0
    for n in range(len(rows)) if lines is None else lines:
        key, own_where = _squeeze(rows[n])
        if len(key) < 2:
            continue
        at = _find(squeezed, key, cursor)
        if at < 0 and (leader := _LEADER.search(rows[n])):  # a contents line: pdfminer sets its dots apart
            key = key[: len(_squeeze(rows[n][: leader.start()])[0])]
            at = _find(squeezed, key, cursor) if len(key) >= 2 else -1
        if at < 0 and (mark := _BULLET_MARK.match(key)) and len(key) - mark.end() >= 2:
            # a list item: pdfminer may set its bullet elsewhere; the bullet's own gap is left alone
            key, own_where = key[mark.end():], own_where[mark.end():]
            at = _find(squeezed, key, cursor)
        if at < 0:
            continue
        cursor = at + len(key)
        own = {k for k in range(1, len(own_where)) if own_where[k] > own_where[k - 1] + 1}
        new = sorted(k - at for k in gaps if at < k < at + len(key))
        new = [k for k in new if k not in own]
        if not new:
            continue
        accepted = _accepted_gaps(key, sorted(own), new, vocabulary, line_glued(rows[n]))
        if accepted:
            row = rows[n]
            for k in sorted(accepted, reverse=True):
                row = row[: own_where[k]] + " " + row[own_where[k]:]
            rows[n] = row
            inserted += len(accepted)
    return "\n".join(rows), inserted


def _find(squeezed: str, key: str, cursor: int) -> int:
    """Where `key` is in `squeezed`: after the previous line's match if there, else anywhere."""
    at = squeezed.find(key, cursor)
    return at if at >= 0 else squeezed.find(key)


_BULLET_MARK = re.compile(r"[•◦▪‣∙·*–-]+")
_LEADER = re.compile(r"\s*(?:\.\s*){3,}\d*\s*$")  # a contents line's dot leader and page number


def _accepted_gaps(key: str, own: list[int], new: list[int], vocabulary: Counter[str], glued: bool) -> list[int]:
    """The new gaps (indexes into `key`, the squeezed line) worth inserting, judged word by word.
    In a line that looks glued, a word found nowhere else in the document is split too."""
    accepted: list[int] = []
    edges = [0, *own, len(key)]
    for start, end in pairwise(edges):
        inside = [k for k in new if start < k < end]
        if not inside:
            continue
        word = key[start:end]
        pieces = [key[a:b] for a, b in zip([start, *inside], [*inside, end])]
        if (_GLUED_RUN.search(word) or (glued and vocabulary[_word(word)] <= 1)
                or all(vocabulary[_word(p)] >= 2 or not _word(p) for p in pieces)
                or _beside_common_word(pieces, vocabulary)):
            accepted += inside
    return accepted


def _beside_common_word(pieces: list[str], vocabulary: Counter[str]) -> bool:
    """Two pieces, one a common word and the other a word of three letters or more ("a" + "Document",
    "derived" + "from"): the glue of a producer that drops short gaps. A common word is an English
    stop word confirmed in the document, or a word of two letters or more that stands on its own in
    it FREQUENT_WORD times. Kerning splits a word into pieces that are neither ("howev" + "er",
    "b" + "uilt")."""
    if len(pieces) != 2:
        return False
    first, second = (_word(p) for p in pieces)
    common_words = _common_words()
    return any((common in common_words and vocabulary[common] >= 2
                or vocabulary[common] >= FREQUENT_WORD and len(common) >= 2 and common.isalpha())
               and len(other) >= 3 and other.isalpha()
               for common, other in ((first, second), (second, first)))


@cache
def _common_words() -> frozenset[str]:
    """English stop words (bm25s' list, Lucene's 33): imported on first use, not with this module."""
    from bm25s.stopwords import STOPWORDS_EN

    return frozenset(STOPWORDS_EN)


def _vocabulary(texts: list[str]) -> Counter[str]:
    """How often each word occurs in the document (`_word` form)."""
    return Counter(_word(w) for t in texts for w in t.split())


def _with_free_words(vocabulary: Counter[str], alternatives) -> Counter[str]:
    """`vocabulary`, with the words pdfminer's text sets between different neighbours on both sides
    counted as confirmed. A producer that glues short words everywhere leaves "they" nowhere on its
    own in pdfium's text, while a kerning split's piece always has the same neighbour on one side
    ("howev" before "er", "efile" after "Mak"). Words under three letters qualify only when they are
    common English words ("a", "of"): kerning leaves single letters on every side of them."""
    left: dict[str, set[str]] = {}
    right: dict[str, set[str]] = {}
    for text in alternatives:
        tokens = [_word(t) for t in text.split()]
        for a, b in pairwise(tokens):
            if a and b:
                right.setdefault(a, set()).add(b)
                left.setdefault(b, set()).add(a)
    confirmed = Counter(vocabulary)
    for word, after in right.items():
        sides = min(len(after), len(left.get(word, ())))
        if sides >= FREE_WORD_NEIGHBOURS and confirmed[word] < 2 and (len(word) >= 3 or word in _common_words()):
            confirmed[word] = 2
    return confirmed


def _word(token: str) -> str:
    """A token as a vocabulary entry: lower case, without leading and trailing punctuation."""
    return token.strip(_PUNCTUATION).lower()


def _squeeze(text: str) -> tuple[str, list[int]]:
    """`text` without whitespace, each character NFKC-folded ("ﬁ" -> "fi"), with the index in
    `text` each squeezed character came from."""
    chars: list[str] = []
    where: list[int] = []
    for i, ch in enumerate(text):
        if ch.isspace():
            continue
        folded = unicodedata.normalize("NFKC", ch) if ord(ch) > 127 else ch
        for part in folded:
            if not part.isspace():
                chars.append(part)
                where.append(i)
    return "".join(chars), where


def _pdfminer_pages(data: bytes, indexes: list[int]) -> dict[int, str]:
    """pdfminer.six's text of the given 0-based pages (its layout analysis puts spaces at word gaps)."""
    try:
        from pdfminer.converter import PDFPageAggregator
        from pdfminer.layout import LAParams, LTTextContainer
        from pdfminer.pdfinterp import PDFPageInterpreter, PDFResourceManager
        from pdfminer.pdfpage import PDFPage
    except ImportError:
        raise ImportError("re-spacing glued PDF lines needs pdfminer.six: pip install pdfminer.six") from None

    wanted = set(indexes)
    if not wanted:
        return {}
    resources = PDFResourceManager()
    device = PDFPageAggregator(resources, laparams=LAParams())
    interpreter = PDFPageInterpreter(resources, device)
    out: dict[int, str] = {}
    for i, page in enumerate(PDFPage.get_pages(io.BytesIO(data), check_extractable=False)):
        if i > max(wanted):
            break
        if i not in wanted:
            continue
        try:
            interpreter.process_page(page)
            layout = device.get_result()
        except Exception:  # one damaged page: the others can still be re-spaced
            continue
        out[i] = "".join(el.get_text() for el in layout if isinstance(el, LTTextContainer))
    return out

