"""Answering: retrieve, build the prompt, generate; with timings and the sources cited.

Modes: "rag" (retrieved context, cited answer) and "base" (the model alone, no retrieval). It
wires the retriever, prompts and generator together and does nothing else.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterator

from rag.errors import ConfigError
from rag.generator import Generator
from rag.prompts import base_messages, rag_messages
from rag.retriever import Hit, Retriever

ANSWER_MODES = ("rag", "base")


@dataclass
class Answer:
    question: str
    answer: str
    sources: list[Hit]
    mode: str
    timings: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "question": self.question,
            "answer": self.answer,
            "mode": self.mode,
            "sources": [hit.as_dict() for hit in self.sources],
            "timings": {key: round(value, 4) for key, value in self.timings.items()},
        }


class Assistant:
    def __init__(self, generator: Generator, retriever: Retriever | None = None, *, k: int = 4,
                 retrieval_mode: str = "hybrid", max_tokens: int = 200, temperature: float = 0.0):
        self.generator = generator
        self.retriever = retriever
        self.k = k
        self.retrieval_mode = retrieval_mode
        self.max_tokens = max_tokens
        self.temperature = temperature

    def prepare(self, question: str, mode: str = "rag") -> tuple[list[dict], list[Hit], float]:
        """Messages and sources for a question, and the seconds retrieval took."""
        if not question or not question.strip():
            raise ConfigError("question is empty")
        if mode not in ANSWER_MODES:
            raise ConfigError(f"mode must be one of {', '.join(ANSWER_MODES)}; got {mode!r}")
        if mode == "base":
            return base_messages(question), [], 0.0
        if self.retriever is None:
            raise ConfigError("mode 'rag' needs a collection to retrieve from")
        start = time.perf_counter()
        hits = self.retriever.search(question, k=self.k, mode=self.retrieval_mode)
        return rag_messages(question, hits), hits, time.perf_counter() - start

    def ask(self, question: str, mode: str = "rag") -> Answer:
        messages, hits, retrieve_s = self.prepare(question, mode)
        start = time.perf_counter()
        text = self.generator.generate(messages, max_tokens=self.max_tokens, temperature=self.temperature)
        generate_s = time.perf_counter() - start
        timings = {"retrieve_s": retrieve_s, "generate_s": generate_s, "total_s": retrieve_s + generate_s}
        return Answer(question, text.strip(), hits, mode, timings)

    def ask_stream(self, question: str, mode: str = "rag") -> "AnswerStream":
        messages, hits, retrieve_s = self.prepare(question, mode)
        return AnswerStream(self, question, mode, messages, hits, retrieve_s)


class AnswerStream:
    """Iterate for the answer's text pieces; `.sources` is known before the first piece and
    `.answer` (with timings) once iteration ends."""

    def __init__(self, assistant: Assistant, question: str, mode: str, messages: list[dict], hits: list[Hit],
                 retrieve_s: float):
        self._assistant = assistant
        self.question = question
        self.mode = mode
        self.messages = messages
        self.sources = hits
        self._retrieve_s = retrieve_s
        self.answer: Answer | None = None

    def __iter__(self) -> Iterator[str]:
        a = self._assistant
        start = time.perf_counter()
        first = None
        pieces: list[str] = []
        for piece in a.generator.stream(self.messages, max_tokens=a.max_tokens, temperature=a.temperature):
            if first is None:
                first = time.perf_counter() - start
            pieces.append(piece)
            yield piece
        generate_s = time.perf_counter() - start
        timings = {"retrieve_s": self._retrieve_s, "first_token_s": first or generate_s,
                   "generate_s": generate_s, "total_s": self._retrieve_s + generate_s}
        self.answer = Answer(self.question, "".join(pieces).strip(), self.sources, self.mode, timings)
