import pytest

from rag.answer import Assistant
from rag.generator import LocalGenerator
from rag.retriever import Retriever


def test_pipeline_plumbing_with_tiny_model(sample_collection, embedder, tiny_model_dir):
    assistant = Assistant(LocalGenerator(str(tiny_model_dir)), Retriever(sample_collection, embedder),
                          k=2, max_tokens=8)
    answer = assistant.ask("How long is the Tidy T3 warranty?")
    assert [s.source.rsplit("/", 1)[-1] for s in answer.sources][0] == "tidy_t3_manual.html"
    assert {"retrieve_s", "generate_s", "total_s"} <= set(answer.timings)
    stream = assistant.ask_stream("How long is the Tidy T3 warranty?")
    assert stream.sources[0].source == answer.sources[0].source  # known before the first token
    assert "".join(stream).strip() == answer.model_answer  # what streamed is the model's own text
    assert stream.answer.answer == answer.answer

    base = assistant.ask("How long is the Tidy T3 warranty?", mode="base")
    assert base.sources == [] and base.mode == "base"
    with pytest.raises(ValueError, match="question is empty"):
        assistant.ask("")
    with pytest.raises(ValueError, match="mode must be one of rag, base; got 'lora'"):
        assistant.ask("x", mode="lora")


@pytest.mark.slow
def test_smollm2_answers_a_sample_question_with_the_fact(sample_collection, embedder, smollm2_dir):
    assistant = Assistant(LocalGenerator(str(smollm2_dir)), Retriever(sample_collection, embedder), k=3,
                          max_tokens=60)
    answer = assistant.ask("When was the Korvik Island Lighthouse first lit?")
    assert "1887" in answer.answer
    assert answer.sources[0].source.endswith("korvik_lighthouse.md")
