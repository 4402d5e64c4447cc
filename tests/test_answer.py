import re

import pytest

from rag.answer import Assistant
from rag.generator import LocalGenerator
from rag.retriever import Retriever


def test_pipeline_plumbing_with_tiny_model(sample_collection, embedder, tiny_model_dir):
    assistant = Assistant(LocalGenerator(str(tiny_model_dir)), Retriever(sample_collection, embedder),
                          k=2, max_tokens=8)
    answer = assistant.ask("How long is the Tidy T3 warranty?")
    assert [s.source.rsplit("/", 1)[-1] for s in answer.sources][0] == "tidy_t3_manual.html"
    assert {"retrieve_s", "embed_s", "dense_s", "bm25_s", "fusion_s", "rerank_s", "prompt_s", "first_token_s",
            "generate_s", "total_s"} == set(answer.timings)
    stages = sum(answer.timings[s] for s in ("embed_s", "dense_s", "bm25_s", "fusion_s", "rerank_s"))
    assert 0 < stages <= answer.timings["retrieve_s"] and answer.timings["prompt_s"] > 0
    assert answer.timings["total_s"] == pytest.approx(
        answer.timings["retrieve_s"] + answer.timings["prompt_s"] + answer.timings["generate_s"])
    stream = assistant.ask_stream("How long is the Tidy T3 warranty?")
    assert stream.sources[0].source == answer.sources[0].source  # known before the first token
    assert "".join(stream).strip() == answer.model_answer  # what streamed is the model's own text
    assert stream.answer.answer == answer.answer

    base = assistant.ask("How long is the Tidy T3 warranty?", mode="base")
    assert base.sources == [] and base.mode == "base"
    with pytest.raises(ValueError, match="question is empty"):
        assistant.ask("")
    with pytest.raises(ValueError, match="mode must be one of base, rag, lora, lora\\+rag; got 'best'"):
        assistant.ask("x", mode="best")
    # the adapter modes retrieve exactly as their plain twins do (the generator carries the adapter)
    assert assistant.prepare("What is tea?", "lora").hits == []
    assert ([h.chunk_id for h in assistant.prepare("What is tea?", "lora+rag").hits]
            == [h.chunk_id for h in assistant.prepare("What is tea?", "rag").hits] != [])


@pytest.mark.slow
def test_smollm2_answers_a_sample_question_with_the_fact(sample_collection, embedder, smollm2_dir):
    assistant = Assistant(LocalGenerator(str(smollm2_dir)), Retriever(sample_collection, embedder), k=3,
                          max_tokens=60)
    answer = assistant.ask("When was the Korvik Island Lighthouse first lit?")
    assert "1887" in answer.answer
    assert answer.sources[0].source.endswith("korvik_lighthouse.md")


@pytest.mark.slow
def test_the_shipped_reader_adapter_quotes_and_cites_or_says_it_does_not_know(sample_collection, embedder,
                                                                              smollm2_dir, tmp_path):
    """The reader adapter (rag/data/adapters/reader, trained on other documents than these) answers
    from the passages with a citation by itself, and declines when they do not hold the answer."""
    from rag.adapters import resolve_adapter
    from rag.prompts import is_abstention

    reader = resolve_adapter("reader", tmp_path)  # no registered adapters: the shipped one
    generator = LocalGenerator(str(smollm2_dir), adapter=str(reader.path))
    # no gate, attribution or fallback: the model's own text is what is checked
    assistant = Assistant(generator, Retriever(sample_collection, embedder), k=3, max_tokens=60,
                          abstain_threshold=None, attribute=False, fallback=False)
    answer = assistant.ask("How tall is the Korvik lighthouse tower?", mode="lora+rag")
    assert "31" in answer.model_answer
    cited = [int(n) for n in re.findall(r"\[(\d)\]", answer.model_answer)]
    assert cited and all("31 metres" in answer.sources[n - 1].text for n in cited)
    declined = assistant.ask("What is the opening time of the Korvik lighthouse gift shop on Sundays?",
                             mode="lora+rag")
    assert is_abstention(declined.model_answer)


class CountingGenerator:
    """A fake Generator that records whether it was called: the gate must answer without the model."""

    name = "counting"

    def __init__(self):
        self.calls = 0

    def generate(self, messages, *, max_tokens=200, temperature=0.0):
        return "".join(self.stream(messages))

    def stream(self, messages, *, max_tokens=200, temperature=0.0):
        self.calls += 1
        yield "The Tidy T3 has a two-year warranty."


def test_the_gate_abstains_without_calling_the_model(sample_collection, embedder):
    from rag.prompts import NO_ANSWER

    model = CountingGenerator()
    assistant = Assistant(model, Retriever(sample_collection, embedder), k=3, abstain_threshold=0.3, min_coverage=0.75)
    off_topic = assistant.ask("What is the capital of Mongolia?")
    assert off_topic.answer == NO_ANSWER and off_topic.gated and off_topic.kind == "abstained" and model.calls == 0
    assert off_topic.low_confidence and "is close enough" in off_topic.notes[0]
    unmentioned = assistant.ask("What are the opening times of the Korvik lighthouse gift shop on Sundays?")
    assert unmentioned.gated and "key terms" in unmentioned.notes[0] and model.calls == 0
    on_topic = assistant.ask("How long is the Tidy T3 warranty?")
    assert not on_topic.gated and model.calls == 1
    assert on_topic.answer == "The Tidy T3 has a two-year warranty [1]." and on_topic.kind == "answer"
    assert on_topic.citations[0].supported and on_topic.highlights[1]


@pytest.mark.slow
def test_smollm2_behind_the_gate_and_attribution(sample_collection, embedder, smollm2_dir):
    """The real model: an off-topic question is declined up front, an on-topic one is answered with
    the fact and a citation added to the passage that holds it."""
    collection = sample_collection
    assistant = Assistant(LocalGenerator(str(smollm2_dir)), Retriever(collection, embedder), k=3, max_tokens=60,
                          abstain_threshold=0.3, min_coverage=0.75)
    assert assistant.ask("Who won the football world cup in 1966?").kind == "abstained"
    answer = assistant.ask("When was the Korvik Island Lighthouse first lit?")
    assert "1887" in answer.answer and answer.kind == "answer"
    cited = {n for c in answer.citations if c.supported for n in c.passages}
    assert cited and all(answer.sources[n - 1].source.endswith("korvik_lighthouse.md") for n in cited)
    assert f"[{min(cited)}]" in answer.answer


def test_an_unsupported_answer_becomes_a_quote_or_no_answer(sample_collection, embedder):
    from rag.prompts import NO_ANSWER

    class Says(CountingGenerator):
        def __init__(self, text):
            super().__init__()
            self.text = text

        def stream(self, messages, *, max_tokens=200, temperature=0.0):
            self.calls += 1
            yield self.text

    retriever = Retriever(sample_collection, embedder)
    # the passages mention everything asked about: the best passage sentence is quoted instead
    quoted = Assistant(Says("The moon is made of green cheese."), retriever, k=3, abstain_threshold=None,
                       min_coverage=0.75).ask("How long is the Tidy T3 warranty?")
    assert quoted.kind == "quote" and quoted.answer == 'Quote from [1]: "The Tidy T3 has a two-year warranty."'
    assert quoted.model_answer == "The moon is made of green cheese."
    # they do not mention how loud it is: no quote pretends to answer, the answer is no answer
    declined = Assistant(Says("It runs at 85 decibels."), retriever, k=3, abstain_threshold=None,
                         min_coverage=0.75).ask("How loud is the Tidy T3 on the standard suction level?")
    assert declined.kind == "abstained" and declined.answer == NO_ANSWER and not declined.gated
    assert "related, but not an answer" in declined.notes[-1] and declined.low_confidence


def test_a_citation_after_the_full_stop_is_part_of_its_sentence(sample_collection, embedder):
    """"... warranty. [1]" is one cited sentence, not a supported one plus an unsupported "[1]"."""
    from rag.attribution import sentences

    text = "The Tidy T3 has a two-year warranty. [1] It charges in four hours [2]. [2]"
    assert [text[s.start:s.end] for s in sentences(text)] == [
        "The Tidy T3 has a two-year warranty. [1]", "It charges in four hours [2]. [2]"]

    class Says(CountingGenerator):
        def stream(self, messages, *, max_tokens=200, temperature=0.0):
            yield "The Tidy T3 has a two-year warranty. [1]"

    answer = Assistant(Says(), Retriever(sample_collection, embedder), k=3, abstain_threshold=None,
                       min_coverage=0.75).ask("How long is the Tidy T3 warranty?")
    assert answer.kind == "answer" and len(answer.citations) == 1 and answer.citations[0].passages
    assert all(c.supported for c in answer.citations)
