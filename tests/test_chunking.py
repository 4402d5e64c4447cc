import pytest

from conftest import SAMPLE
from rag.chunking import Chunker
from rag.loading import Document, Page, load


def test_no_chunk_exceeds_the_embedder_limit(chunker, embedder):
    # One 3,000-token "word" and dense prose: separators cannot save the splitter here.
    doc = Document(None, [Page("x" * 6000 + " " + "tokenization of sub-words " * 400, 1)])
    chunks = chunker.split(doc, "big.txt")
    assert len(chunks) > 10
    assert max(chunker.count_tokens(c.text) for c in chunks) <= embedder.max_seq_length


def _long_page() -> str:
    """Several pages of prose with repeated paragraphs, odd whitespace and a long list: the text in
    which a splitter's pieces are easiest to misplace."""
    import random

    rng = random.Random(7)
    words = "adapter rank alpha memory gradient layer token dataset forgetting weights frozen learn".split()
    paragraphs = []
    for n in range(60):
        body = " ".join(rng.choice(words) for _ in range(rng.randint(15, 90)))
        paragraphs.append(f"Section {n % 7}.\tThe {body}.\r\n  - item one\n  - item two  ")
    paragraphs += paragraphs[:10]  # repeated passages
    return "\n\n".join(paragraphs)


@pytest.mark.parametrize("source", ["generated", "korvik_lighthouse.md", "tidy_t3_manual.html",
                                    "marmot_field_notes.pdf"])
def test_spans_point_back_into_the_page_exactly_and_ids_are_stable(chunker, source):
    doc = Document(None, [Page(_long_page(), None)]) if source == "generated" else load(SAMPLE / source)
    chunks = chunker.split(doc, "doc")
    pages = {p.page: p.text for p in doc.pages}
    assert all(pages[c.page][c.start:c.end] == c.text for c in chunks)  # every chunk, exactly
    assert [c.id for c in chunker.split(doc, "doc")] == [c.id for c in chunks]
    assert len({c.id for c in chunks}) == len(chunks)
    starts = [c.start for c in chunks]
    assert starts == sorted(starts)


def test_chunk_size_above_model_limit_is_refused(embedder):
    with pytest.raises(ValueError, match=r"chunk_size 300 exceeds the embedding model's limit of 254 tokens"):
        Chunker(embedder.tokenizer, embedder.max_seq_length, chunk_size=300)


def test_chunk_size_and_overlap_are_respected(embedder):
    small = Chunker(embedder.tokenizer, embedder.max_seq_length, chunk_size=40, chunk_overlap=10)
    doc = Document(None, [Page("Marmots whistle when eagles fly over the meadow. " * 60, None)])
    chunks = small.split(doc, "m.txt")
    assert all(small.count_tokens(c.text) <= 40 + 2 for c in chunks)
    assert chunks[0].end > chunks[1].start  # overlapping windows
