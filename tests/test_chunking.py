import pytest

from conftest import SEEDS
from rag.chunking import Chunker
from rag.loading import Document, Page, load


def test_no_chunk_exceeds_the_embedder_limit(chunker, embedder):
    # One 3,000-token "word" and dense prose: separators cannot save the splitter here.
    doc = Document(None, [Page("x" * 6000 + " " + "tokenization of sub-words " * 400, 1)])
    chunks = chunker.split(doc, "big.txt")
    assert len(chunks) > 10
    assert max(chunker.count_tokens(c.text) for c in chunks) <= embedder.max_tokens


def test_spans_point_back_into_the_page_and_ids_are_stable(chunker):
    doc = load(SEEDS / "000_1196871478328120.txt")
    chunks = chunker.split(doc, "seed.txt")
    page = doc.pages[0].text
    exact = [c for c in chunks if page[c.start:c.end] == c.text]
    assert len(exact) >= 0.9 * len(chunks)
    assert [c.id for c in chunker.split(doc, "seed.txt")] == [c.id for c in chunks]
    assert len({c.id for c in chunks}) == len(chunks)


def test_chunk_size_above_model_limit_is_refused(embedder):
    with pytest.raises(ValueError, match=r"chunk_size 300 exceeds the embedding model's limit of 254 tokens"):
        Chunker(embedder.tokenizer, embedder.max_tokens, chunk_size=300)


def test_chunk_size_and_overlap_are_respected(embedder):
    small = Chunker(embedder.tokenizer, embedder.max_tokens, chunk_size=40, chunk_overlap=10)
    doc = Document(None, [Page("Marmots whistle when eagles fly over the meadow. " * 60, None)])
    chunks = small.split(doc, "m.txt")
    assert all(small.count_tokens(c.text) <= 40 + 2 for c in chunks)
    assert chunks[0].end > chunks[1].start  # overlapping windows
