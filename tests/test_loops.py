"""Loop detection: cycles in the answer are cut, copies of what the documents repeat are not."""

import pytest

from rag.answer import Assistant
from rag.loops import LoopGuard, is_looping, trim

LOOPING = ("The Korvik Island Lighthouse is a fictional island in the fictional island of the island of the island "
           "of the island of the island of the island of the island of")


def test_a_short_cycle_is_cut_where_it_began():
    loop = LoopGuard().check(LOOPING)
    assert loop is not None and loop.ngram == "island of the island"
    assert trim(LOOPING, loop) == "The Korvik Island Lighthouse is a fictional island in the fictional island of the"


def test_a_repeated_sentence_is_a_loop_and_a_plain_answer_is_not():
    answer = "It was first lit in 1887 [1]. The keeper lived there. " * 3
    assert trim(answer, LoopGuard().check(answer)) == "It was first lit in 1887 [1]. The keeper lived there."
    assert not is_looping("The lighthouse was first lit in 1887 and automated in 1968 [1]. Its lens is a "
                          "first-order Fresnel lens, and the light is visible for 18 nautical miles.")


def test_the_cut_drops_the_unfinished_sentence_it_leaves():
    """Seen on a real manual: the 12 words that came round again began inside a new sentence, and the
    cut there left "The" dangling after the last full sentence, which the sources check then listed
    as unsupported. Without a full sentence before it, the cut text stays as it is (above)."""
    answer = ("The set -e option is used to set the environment of a shell to a new shell [1]. This is done by "
              "using the -e option to the set builtin command [3]. The -e option is used to set the "
              "environment of a shell to a new shell")
    loop = LoopGuard().check(answer)
    assert loop is not None and answer[loop.cut:].startswith("e option")
    assert trim(answer, loop) == ("The set -e option is used to set the environment of a shell to a new shell [1]. "
                                  "This is done by using the -e option to the set builtin command [3].")
    cited_after = "It was lit in 1887. [1] The lamp was lit in 1887. [1] The lamp was lit in 1887. [1] The lamp"
    assert trim(cited_after, LoopGuard().check(cited_after)) == "It was lit in 1887. [1]"


def test_copying_what_the_context_repeats_is_not_a_loop():
    steps = "Press the red button. Wait. Press the red button. Wait. Press the red button."
    assert not is_looping(steps, context=f"[1] To reset it: {steps}")
    assert is_looping(steps)  # the same text with no such context is one


class ScriptedGenerator:
    """A fake Generator that streams a fixed text word by word: a looping model on demand, which a
    real model is not. It counts the words it was asked for, to show generation stopped early."""

    name = "scripted"

    def __init__(self, text: str):
        self.words = text.split(" ")
        self.streamed = 0

    def generate(self, messages, *, max_tokens=200, temperature=0.0):
        return " ".join(self.words)

    def stream(self, messages, *, max_tokens=200, temperature=0.0):
        for n, word in enumerate(self.words):
            self.streamed += 1
            yield word if n == 0 else " " + word


def test_the_assistant_stops_a_looping_model_and_never_shows_the_loop():
    looping = ScriptedGenerator(LOOPING + " of the island" * 30)
    stream = Assistant(looping).ask_stream("Can children climb to the gallery?", mode="base")
    shown = "".join(stream)
    assert shown == stream.answer.answer == trim(LOOPING, LoopGuard().check(LOOPING))
    assert looping.streamed < 40  # stopped, not run to the end of its 120 words
    assert stream.answer.notes and "repeated itself" in stream.answer.notes[0]
    plain = Assistant(ScriptedGenerator("It was first lit in 1887.")).ask("When was it lit?", mode="base")
    assert plain.answer == "It was first lit in 1887." and plain.notes == []


@pytest.mark.slow
def test_smollm2_answer_to_the_gallery_question_does_not_loop(sample_collection, embedder, smollm2_dir):
    """The newcomer's first question in the issue: SmolLM2 looped on it for 64 tokens."""
    from rag.generator import LocalGenerator
    from rag.retriever import Retriever

    assistant = Assistant(LocalGenerator(str(smollm2_dir)), Retriever(sample_collection, embedder), k=3,
                          max_tokens=200)
    answer = assistant.ask("Can children climb to the gallery?")
    context = " ".join(m["content"] for m in answer.messages)
    assert not is_looping(answer.answer, context), answer.answer


def test_an_echo_of_the_prompt_layout_is_cut():
    from rag.loops import scaffold_echo

    answer = "The Tidy T3 has a two-year warranty.\n\n[4] (source: tidy_t3_manual.html)\nThe battery"
    assert answer[: scaffold_echo(answer)] == "The Tidy T3 has a two-year warranty."
    assert scaffold_echo("It was first lit in 1887 [1]. See [2] (page 3).") is None
    assert scaffold_echo("Answer: it holds 0.4 litres.") is None  # a leading label is not an echo
    assert scaffold_echo("It is 31 metres tall.\nQuestion: How tall") == len("It is 31 metres tall.")
    stream = Assistant(ScriptedGenerator("It is 31 metres tall. CONTEXT>>> Question: x")).ask_stream("q", mode="base")
    assert "".join(stream) == "It is 31 metres tall." and "echo its prompt" in stream.answer.notes[0]
