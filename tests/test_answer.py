import re

import pytest

from rag.answer import Assistant
from rag.generator import LocalGenerator
from rag.retriever import Hit, Retriever


def test_pipeline_plumbing_with_tiny_model(sample_collection, embedder, tiny_model_dir):
    assistant = Assistant(LocalGenerator(str(tiny_model_dir)), Retriever(sample_collection, embedder),
                          k=2, max_tokens=8)
    answer = assistant.ask("How long is the Tidy T3 warranty?")
    assert [s.source.rsplit("/", 1)[-1] for s in answer.sources][0] == "tidy_t3_manual.html"
    assert {"retrieve_s", "embed_s", "dense_s", "bm25_s", "fusion_s", "rerank_s", "prompt_s", "first_token_s",
            "generate_s", "attribute_s", "total_s"} == set(answer.timings)
    stages = sum(answer.timings[s] for s in ("embed_s", "dense_s", "bm25_s", "fusion_s", "rerank_s"))
    assert 0 < stages <= answer.timings["retrieve_s"] and answer.timings["prompt_s"] > 0
    assert answer.timings["attribute_s"] > 0 or answer.kind == "abstained"
    assert answer.timings["total_s"] == pytest.approx(sum(
        answer.timings[s] for s in ("retrieve_s", "prompt_s", "generate_s", "attribute_s")))
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


def test_a_quote_answers_what_was_asked_or_there_is_none(sample_collection, embedder):
    """The fallback quote: the sentence about what the question singles out, not the passage's
    opening; a number for a quantity question; nothing from a passage that never names the subject."""
    from rag.attribution import Attributor

    retriever, attributor = Retriever(sample_collection, embedder), Attributor(embedder)

    def quote(question):
        hits = retriever.search(question, k=3)
        found = attributor.best_quote(question, hits)
        return None if found is None else " ".join(hits[found[0] - 1].text[found[1].start:found[1].end].split())

    # "Korvik" and "lighthouse" are the section's heading path: "tall" and "tower" pick the sentence
    assert quote("How tall is the Korvik lighthouse tower?").startswith("The tower is 31 metres tall")
    # the subject is in the sentence before; "how much" wants the sentence with a number
    assert quote("How much does an adult Alpine marmot weigh?").startswith("Adults weigh three to seven kilograms")
    # a PDF's heading line, which runs into the sentence below it, is not part of the quote
    assert quote("How long do Alpine marmots hibernate?").startswith("Alpine marmots hibernate for about six months")
    # the caffeine sentence is about green tea, and its passage never names oolong
    assert quote("How many caffeine milligrams are in a cup of oolong tea?") is None
    # a heading that repeats the question says nothing new
    hits = [Hit("faq.md", None, 1.0, "Why is the sky blue?\n\nRayleigh scattering favours short wavelengths of light.",
                "c1", 0, 60)]
    found = attributor.best_quote("Why is the sky blue?", hits)
    assert found is not None and hits[0].text[found[1].start:found[1].end].startswith("Rayleigh")


def test_an_answer_that_misses_the_point_of_the_question_becomes_a_quote(sample_collection, embedder):
    """A supported sentence that does not answer ("The Tidy T3 is a fictional product ...", copied from
    a passage) is replaced by the sentence that does; a quantity question wants a number."""
    from rag.attribution import addresses

    class Says(CountingGenerator):
        def stream(self, messages, *, max_tokens=200, temperature=0.0):
            yield "The Tidy T3 is a fictional product described for this project's sample corpus [2]."

    assistant = Assistant(Says(), Retriever(sample_collection, embedder), k=3, abstain_threshold=None,
                          min_coverage=0.75)
    answer = assistant.ask("Which Wi-Fi networks can the Tidy T3 join?")
    assert answer.kind == "quote" and "2.4 GHz Wi-Fi networks" in answer.answer
    assert "did not speak to what the question asks" in answer.notes[-1]

    hits = [Hit("t3.html", None, 1.0, text, f"c{i}", 0, len(text)) for i, text in enumerate((
        "The Tidy T3 is a robot vacuum cleaner. The robot only joins 2.4 GHz Wi-Fi networks.",
        "Charge the Tidy T3 for at least four hours before its first run."))]
    assert not addresses("Which Wi-Fi networks can the Tidy T3 join?", "The Tidy T3 is a robot [1].", hits)
    assert addresses("Which Wi-Fi networks can the Tidy T3 join?", "Only 2.4 GHz networks [1].", hits)
    assert not addresses("How long should the Tidy T3 charge?", "It should charge before its first run [2].", hits)
    assert addresses("How long should the Tidy T3 charge?", "At least four hours [2].", hits)
    # the cited passage must name what the question asks about when another passage does
    tea = [Hit("tea.txt", None, 1.0, "A typical cup of green tea holds roughly 20 to 45 milligrams of caffeine.",
               "t1", 0, 70),
           Hit("tea.txt", None, 0.9, "Green, white, oolong and black teas differ in how the leaves are processed.",
               "t2", 0, 75)]
    assert not addresses("How much caffeine is in oolong tea?", "20 to 45 milligrams [1].", tea, cited={1})
    assert addresses("How much caffeine is in green tea?", "20 to 45 milligrams [1].", tea, cited={1})
    # an answer under the section that the question names speaks to it
    faq = [Hit("design.html", None, 1.0, "There are several advantages. One is performance.", "d1", 0, 50,
               heading="Design FAQ > Why are Python strings immutable?"),
           Hit("design.html", None, 0.9, "Python has no switch statement.", "d2", 0, 31, heading="Design FAQ")]
    assert addresses("Why are Python strings immutable?", "There are several advantages [1].", faq, cited={1})
    assert not addresses("Why are Python strings immutable?", "There are several advantages [1].", faq, cited=())


def test_a_citation_of_a_passage_that_does_not_support_the_sentence_is_replaced(sample_collection, embedder):
    from rag.attribution import Attributor

    hits = Retriever(sample_collection, embedder).search("How long is the Tidy T3 warranty?", k=3)
    right = next(n for n, h in enumerate(hits, start=1) if "two-year warranty" in h.text)
    wrong = next(n for n in range(1, len(hits) + 1) if n != right)
    found = Attributor(embedder).attribute(f"The Tidy T3 has a two-year warranty [{wrong}].", hits,
                                           "How long is the Tidy T3 warranty?")
    assert found.answer == f"The Tidy T3 has a two-year warranty [{right}]."
    assert found.citations[0].passages == [right] and found.citations[0].replaced
    # a citation of a passage that supports the sentence is the model's to keep
    kept = Attributor(embedder).attribute(f"The Tidy T3 has a two-year warranty [{right}].", hits)
    assert kept.answer == f"The Tidy T3 has a two-year warranty [{right}]." and not kept.citations[0].replaced


def test_a_citation_of_a_passage_that_backs_nothing_is_removed(sample_collection, embedder):
    """A number shown as a source backs its sentence: one that backs nothing is dropped, and a
    sentence that no passage supports keeps no marker at all (it is flagged unsupported)."""
    from rag.attribution import Attributor

    hits = Retriever(sample_collection, embedder).search("How long is the Tidy T3 warranty?", k=3)
    right = next(n for n, h in enumerate(hits, start=1) if "two-year warranty" in h.text)
    wrong = next(n for n in range(1, len(hits) + 1) if n != right)
    both = Attributor(embedder).attribute(f"The Tidy T3 has a two-year warranty [{right}, {wrong}].", hits)
    assert both.answer == f"The Tidy T3 has a two-year warranty [{right}]."
    assert both.citations[0].passages == [right] and both.citations[0].dropped == [wrong]
    invented = Attributor(embedder).attribute(
        f"The Tidy T3 has a two-year warranty [{right}]. Here is an example of its firmware in Rust: [{wrong}]", hits)
    assert invented.answer == f"The Tidy T3 has a two-year warranty [{right}]. Here is an example of its firmware in Rust:"
    kept, removed = invented.citations
    assert kept.passages == [right] and kept.supported and not kept.dropped
    assert removed.passages == [] and removed.dropped == [wrong] and not removed.supported
    assert removed.sentence == "Here is an example of its firmware in Rust:"


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
