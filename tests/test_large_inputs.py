"""Pathological inputs: a huge single line, one repeated character, many tiny sections, titles the
text lacks. Costs are pinned as operation counts (tokenizer calls, lines run, characters scanned),
never as times: a step that is quadratic in the input shows as a count that grows faster than it.
Speed itself is measured in bench/large_inputs.py. Also the `max_file_mb` limit."""

from __future__ import annotations

import random
import re
import sys

import pytest
from langchain_text_splitters import RecursiveCharacterTextSplitter

import rag.headings
from ingest.pipeline import ingest
from rag.chunking import MIN_SECTION_WORDS, _Splitter
from rag.errors import ConfigError
from rag.headings import LOCATE_FULL_MISSES, LOCATE_WINDOW, MAX_TITLE_CHARS, Heading, locate, markdown_headings
from rag.loading import Document, LoadError, Page, load
from rag.settings import Settings, load_settings

WEIGHTS = {"#": 10, "_": 0, " ": 0, "\n": 0, "\t": 0}  # WeightTokenizer's tokens per character
WORDS = "the lighthouse keeper logs each storm and the marmots whistle when eagles fly over".split()


class CountingBackend:
    """The real tokenizer's Rust backend, counting its encode_batch calls and the texts they encode:
    every count, langchain's (`tokenize`) or ours (`__call__`), goes through it."""

    def __init__(self, backend):
        object.__setattr__(self, "backend", backend)
        object.__setattr__(self, "calls", 0)
        object.__setattr__(self, "texts", 0)
        object.__setattr__(self, "chars", 0)

    def encode_batch(self, inputs, *args, **kwargs):
        object.__setattr__(self, "calls", self.calls + 1)
        object.__setattr__(self, "texts", self.texts + len(inputs))
        object.__setattr__(self, "chars", self.chars + sum(len(t) for t in inputs if isinstance(t, str)))
        return self.backend.encode_batch(inputs, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.backend, name)

    def __setattr__(self, name, value):
        setattr(self.backend, name, value)


class WeightTokenizer:
    """A fake tokenizer whose counts reach the branches the real one rarely does: "#" is 10 tokens
    (alone it fills a small chunk), "_" and whitespace none, and a text ending in "!" one more than
    its characters (counts that do not add up)."""

    def count(self, text: str) -> int:
        return sum(WEIGHTS.get(c, 1) for c in text) + text.endswith("!")

    def __call__(self, texts, add_special_tokens, truncation):
        return {"input_ids": [[0] * self.count(t) for t in texts]}


def _line_events(fn, *args):
    """Lines of rag/chunking.py and rag/headings.py run by fn(*args): a count of our own work."""
    ours = {rag.headings.__file__, sys.modules["rag.chunking"].__file__}
    count = 0

    def local(frame, event, arg):
        nonlocal count
        count += event == "line"
        return local

    def trace(frame, event, arg):
        return local if frame.f_code.co_filename in ours else None

    sys.settrace(trace)
    try:
        result = fn(*args)
    finally:
        sys.settrace(None)
    return count, result


def _line(n_words: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(n_words))


@pytest.mark.parametrize("kind", ["prose", "one word", "mixed"])
def test_the_splitter_gives_langchains_chunks(embedder, kind):
    texts = {"prose": "Marmots whistle.\n\n" + _line(900) + "\n" + _line(300, 1),
             "one word": "x" * 5000,
             "mixed": ("word " * 50 + "q" * 3000 + "\n") * 3 + "\u4e2d" * 900 + " \U0001F600" * 300 + "e\u0301" * 400}
    stock = RecursiveCharacterTextSplitter.from_huggingface_tokenizer(embedder.tokenizer, chunk_size=60, chunk_overlap=15)
    assert _Splitter(embedder.tokenizer, 60, 15).split_text(texts[kind]) == stock.split_text(texts[kind])


def test_the_splitter_gives_langchains_chunks_for_any_counts():
    tokenizer, rng = WeightTokenizer(), random.Random(1)
    for _ in range(400):
        size = rng.choice([8, 10, 20, 40])
        overlap = rng.randint(0, size // 2)
        text = "".join(rng.choice(rng.choice(["ab", "ab_", "a#_ ", "ab \n", "a\n\n b#_!", "a  _\t"]))
                       for _ in range(rng.randint(0, 300)))
        stock = RecursiveCharacterTextSplitter(length_function=tokenizer.count, chunk_size=size, chunk_overlap=overlap)
        assert _Splitter(tokenizer, size, overlap).split_text(text) == stock.split_text(text), (size, overlap, text)


@pytest.mark.parametrize("kind", ["one character", "one line of words"])
def test_a_single_line_costs_tokenizer_calls_per_chunk_not_per_character(embedder, chunker, kind, monkeypatch):
    """langchain counts every split with a tokenizer call: one per word of a line, one per character
    of text without spaces (a 50 MB line ran for over ten minutes)."""
    made = {"one character": lambda n: "a" * (40 * n), "one line of words": lambda n: _line(8 * n)}[kind]
    seen = []
    for n in (10_000, 20_000):
        counting = CountingBackend(embedder.tokenizer._tokenizer)
        monkeypatch.setattr(embedder.tokenizer, "_tokenizer", counting)
        chunks = chunker.split(Document(None, [Page(made(n), None)]), "big.txt")
        monkeypatch.undo()
        assert counting.calls <= len(chunks) + 10 and counting.texts <= 2 * len(chunks) + 100
        seen.append(len(chunks))
    assert 1.8 < seen[1] / seen[0] < 2.2


def test_a_heading_as_long_as_a_page_is_not_tokenized_per_section(chunker, embedder, monkeypatch):
    """A long line after "#" is all title; every section under it carries that title in its
    heading path, which was tokenized (and shortened word by word) section after section."""
    text = "# " + _line(50_000) + "\n\n" + "".join(f"## Part {i}\n\n{_line(40, i)}\n\n" for i in range(300))
    doc = Document(None, [Page(text, None, headings=markdown_headings(text))])
    counting = CountingBackend(embedder.tokenizer._tokenizer)
    monkeypatch.setattr(embedder.tokenizer, "_tokenizer", counting)
    chunks = chunker.split(doc, "long.md")
    assert len(chunks) >= 300 and counting.chars <= 5 * len(text)


def _numbered(n: int) -> str:
    return "".join(f"{i % 90 + 1} Item {WORDS[i % len(WORDS)]}\nshort line\n" for i in range(n))


def test_many_tiny_sections_cost_linear_work(chunker):
    """Every line a heading, every section shorter than MIN_SECTION_WORDS: walking the headings once
    per section, or recounting the words of a growing section, is quadratic."""
    work = []
    for n in (300, 600):
        text = _numbered(n)
        doc = Document(None, [Page(text, None, headings=rag.headings.text_headings(text))])
        events, chunks = _line_events(chunker.split, doc, "list.txt")
        assert len(doc.pages[0].headings) == n and chunks
        work.append(events)
    assert work[1] / work[0] < 2.3


def test_sections_join_as_when_recounted(chunker):
    """Counting a section's words piece by piece gives what splitting the whole section gives,
    also where a heading offset cuts a word in two."""
    rng = random.Random(3)
    for _ in range(300):
        text = "".join(rng.choice(["ab", " ", "\n", "cd ", "e", "\u00a0", "\x1c", "\u3000f"])
                       for _ in range(rng.randint(1, 120)))
        offsets = sorted(rng.sample(range(len(text) + 2), min(len(text) + 2, rng.randint(0, 12))))
        bounds = sorted({0, *[o for o in offsets if 0 < o < len(text)]}) + [len(text)]
        expected, start = [], 0
        for end in bounds[1:]:
            if len(text[start:end].split()) < MIN_SECTION_WORDS and end != len(text):
                continue
            expected.append((start, end))
            start = end
        assert chunker._sections(text, offsets) == expected, (text, offsets)


class _Scanned:
    """re for rag.headings, counting the characters each pattern's searches look through."""

    def __init__(self):
        self.chars = 0

    def compile(self, pattern, flags=0):
        compiled, outer = re.compile(pattern, flags), self

        class Pattern:
            def search(self, text, pos=0, endpos=sys.maxsize):
                match = compiled.search(text, pos, endpos)
                outer.chars += (match.end() if match else min(endpos, len(text))) - pos
                return match

        return Pattern()

    def __getattr__(self, name):
        return getattr(re, name)


def test_titles_the_text_lacks_cost_linear_search(monkeypatch):
    """An HTML page's titles are looked for in its rendered text; each one missing from it was a
    search to the end of the text."""
    scanned = _Scanned()
    monkeypatch.setattr(rag.headings, "re", scanned)
    n = 2000
    text = "".join(f"Part\n{i}\n{_line(30, i)}\n" for i in range(n))
    found = locate(text, [(2, f"Chapter{i}") for i in range(n)] + [(2, "Part 7")])
    assert scanned.chars <= (LOCATE_FULL_MISSES + LOCATE_WINDOW + 2) * len(text)
    assert found[-1] == Heading(text.index("Part\n7\n"), 2, "Part 7")  # found ones still are


def test_under_the_miss_budget_a_title_is_searched_to_the_end():
    text = "Intro\n" + "words " * 5000 + "\nUsage\n" + "more " * 100
    titles = [(1, "Missing")] * (LOCATE_FULL_MISSES - 1) + [(1, "Usage")] + [(1, "Absent")] * 200
    assert locate(text, titles)[LOCATE_FULL_MISSES - 1].offset == text.index("Usage")


def test_atx_titles_are_the_lazy_patterns_and_a_long_line_of_hashes_is_linear():
    lazy = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$", re.M)  # the former pattern
    text = "# Title ##\n## Trailing #s and spaces ## \t\n### C# ###\n#  \n# ###\n#### x#y\n####### no\n#\tTab\r\n"
    assert [(h.offset, h.level, h.title) for h in markdown_headings(text)] == [
        (m.start(), len(m[1]), " ".join(m[2].split())) for m in lazy.finditer(text)]
    long = "# a" + "#" * 200_000 + "b\n"  # the lazy title backtracked over the #s once per character
    assert [h.title for h in markdown_headings(long)] == ["a" + "#" * (MAX_TITLE_CHARS - 1)]  # titles are cut


def test_headings_inside_many_code_fences_are_skipped():
    text = "".join(f"## Part {i}\n\n```\n# not a heading {i}\n```\n\n" for i in range(500))
    assert [h.title for h in markdown_headings(text)] == [f"Part {i}" for i in range(500)]


# ---- max_file_mb -----------------------------------------------------------------------------------


def test_max_file_mb_is_a_positive_setting(tmp_path):
    assert Settings().max_file_mb == 100
    assert load_settings(None, environ={"RAG_MAX_FILE_MB": "0.5"}).max_file_mb == 0.5
    with pytest.raises(ConfigError, match=r"max_file_mb must be positive, got 0"):
        Settings(max_file_mb=0)


def test_a_file_over_max_file_mb_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text(_line(300_000))
    with pytest.raises(LoadError, match=r"^\S+notes\.txt: 1\.\d MB is over max_file_mb \(0\.5\); "
                                        r"raise it in rag\.toml or RAG_MAX_FILE_MB$"):
        load(path, max_file_mb=0.5)
    assert load(path, max_file_mb=2).pages[0].text == path.read_text()


def test_a_file_over_max_file_mb_fails_and_the_rest_of_the_batch_lands(tmp_path, collection, embedder, chunker):
    big = tmp_path / "big.txt"
    with big.open("wb") as fh:
        fh.truncate(101 * 2**20)  # sparse: no disk used, and refused before it is read
    good = tmp_path / "good.md"
    good.write_text("Marmots whistle when an eagle flies over.")
    report = ingest([big, good], collection, embedder, chunker, settings=Settings())
    assert (report.new, report.failed) == (1, 1)
    assert report.errors == [f"{big}: 101.0 MB is over max_file_mb (100); raise it in rag.toml or RAG_MAX_FILE_MB"]
    assert collection.count()[0] == 1
